// dermal's end-to-end Grad-CAM (JPEG bytes in, JPEG overlay out) and the
// bare optimised LibTorch forward (preprocessed tensor in), alternated in one
// process so that both see the same machine at the same moments; prints one
// JSON object on stdout. The latency ratio of the two is the figure to trust
// on a noisy machine. Memory is not reported: both models share the process.
//
//   side_by_side MODEL PHOTO [--threads N] [--repeats N] [--warmup N]
#include <fmt/format.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"
#include "image/preprocess.hpp"
#include "measure.hpp"

using namespace measure;

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
    dermal::PredictOptions end_to_end;  // JPEG overlay, as a web app returns it
    end_to_end.explain = true;

    // The floor, loaded as bare_forward loads it.
    torch::jit::Module whole = torch::jit::load(argv[1], torch::kCPU);
    whole.eval();
    torch::jit::Module frozen = torch::jit::freeze(whole);
    torch::jit::Module floor = torch::jit::optimize_for_inference(frozen);
    std::vector<float> input = dermal::preprocess(dermal::decode_image(jpeg.data(), jpeg.size()), model.description());
    const torch::Tensor x =
        torch::from_blob(input.data(), {1, 3, model.description().input_height, model.description().input_width});
    const auto bare_forward = [&] {
      c10::InferenceMode inference;
      floor.forward({x});
    };
    const auto dermal_request = [&] { model.predict(jpeg.data(), jpeg.size(), end_to_end); };

    for (int i = 0; i < options.warmup; ++i) {
      bare_forward();
      dermal_request();
    }
    // Each round times both, in alternating order; a round's ratio compares
    // two runs made moments apart.
    std::vector<double> bare_ms, dermal_ms, round_ratios;
    for (int i = 0; i < options.repeats; ++i) {
      double bare = 0, dermal = 0;
      const auto time_bare = [&] {
        const auto start = Clock::now();
        bare_forward();
        bare = since_ms(start);
      };
      const auto time_dermal = [&] {
        const auto start = Clock::now();
        dermal_request();
        dermal = since_ms(start);
      };
      if (i % 2 == 0) time_bare(), time_dermal();
      else time_dermal(), time_bare();
      bare_ms.push_back(bare);
      dermal_ms.push_back(dermal);
      round_ratios.push_back(dermal / bare);
    }
    nlohmann::json out;
    out["bare_forward_median_ms"] = median(bare_ms);
    out["dermal_gradcam_median_ms"] = median(dermal_ms);
    out["ratio_of_medians"] = median(dermal_ms) / median(bare_ms);
    out["median_round_ratio"] = median(round_ratios);
    out["bare_forward_ms"] = bare_ms;  // every round, in order, to see the noise
    out["dermal_gradcam_ms"] = dermal_ms;
    out["runs"] = options.repeats;
    out["threads"] = options.threads;
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const dermal::Error& e) {
    fmt::print(stderr, "side_by_side: {}: {}\n", dermal::error_code_name(e.code()), e.what());
    return 1;
  }
}
