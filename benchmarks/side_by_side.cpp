// dermal beside the bare optimised LibTorch forward (preprocessed tensor in),
// in one process so that all see the same machine at the same moments:
// dermal's Grad-CAM on a decoded photo (probabilities and map out:
// "predict_gradcam") and end to end (JPEG bytes in, JPEG overlay out). Each
// round runs the three in a rotating order. Prints one JSON object on stdout:
// per contender the median latency and the median CPU time of the whole
// process (all threads) per request, and each dermal contender's latency ratio
// to the bare forward, the figure to trust on a noisy machine. Memory is not
// reported: the models share the process.
//
//   side_by_side MODEL PHOTO [--threads N] [--repeats N] [--warmup N]
#include <fmt/format.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"
#include "image/preprocess.hpp"
#include "measure.hpp"

using namespace measure;

namespace {

// One thing timed round after round.
struct Contender {
  std::string name;
  std::function<void()> run;
  std::vector<double> milliseconds, cpu_milliseconds;

  void time() {
    const double cpu_start = process_cpu_ms();
    const auto start = Clock::now();
    run();
    milliseconds.push_back(since_ms(start));
    cpu_milliseconds.push_back(process_cpu_ms() - cpu_start);
  }
};

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parse_options(argc, argv, "side_by_side", options)) return 2;
  at::set_num_threads(options.threads);
  const std::vector<std::uint8_t> jpeg = read_file(argv[2]);
  try {
    dermal::LoadOptions load_options;
    load_options.threads = options.threads;
    load_options.tune_allocator = true;
    dermal::Model model(argv[1], load_options);
    dermal::PredictOptions cam_only;  // probabilities and the Grad-CAM map, no overlay image
    cam_only.explain = true;
    cam_only.overlay = false;
    dermal::PredictOptions end_to_end;  // JPEG overlay, as a web app returns it
    end_to_end.explain = true;

    // The floor, loaded as bare_forward loads it.
    torch::jit::Module whole = torch::jit::load(argv[1], torch::kCPU);
    whole.eval();
    torch::jit::Module frozen = torch::jit::freeze(whole);
    torch::jit::Module floor = torch::jit::optimize_for_inference(frozen);
    const dermal::Image photo = dermal::decode_image(jpeg.data(), jpeg.size());
    std::vector<float> input = dermal::preprocess(photo, model.description());
    const torch::Tensor x =
        torch::from_blob(input.data(), {1, 3, model.description().input_height, model.description().input_width});

    std::vector<Contender> contenders = {
        {"bare_forward", [&] {
           c10::InferenceMode inference;
           floor.forward({x});
         }},
        {"predict_gradcam", [&] { model.predict(photo, cam_only); }},
        {"end_to_end_gradcam", [&] { model.predict(jpeg.data(), jpeg.size(), end_to_end); }},
    };
    for (int i = 0; i < options.warmup; ++i)
      for (Contender& c : contenders) c.run();
    const std::size_t n = contenders.size();
    for (int i = 0; i < options.repeats; ++i)
      for (std::size_t k = 0; k < n; ++k) contenders[(i + k) % n].time();

    nlohmann::json out;
    const double floor_ms = median(contenders[0].milliseconds);
    for (const Contender& c : contenders) {
      out[c.name] = {{"median_ms", median(c.milliseconds)},
                     {"median_cpu_ms", median(c.cpu_milliseconds)},
                     {"ms", c.milliseconds}};  // every round, in order, to see the noise
      if (&c != &contenders[0]) out[c.name]["ratio_to_bare_forward"] = median(c.milliseconds) / floor_ms;
    }
    out["runs"] = options.repeats;
    out["threads"] = options.threads;
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const dermal::Error& e) {
    fmt::print(stderr, "side_by_side: {}: {}\n", dermal::error_code_name(e.code()), e.what());
    return 1;
  }
}
