// A cold start, split: what dermal::Model does from process start to the
// first end-to-end Grad-CAM result (JPEG bytes in, JPEG overlay out), with
// the load's parts timed inside load_network. Prints "first-result" (flushed)
// when the result exists, then one JSON object; benchmarks/cold_start.py
// runs it in fresh processes and times the whole from outside.
//
//   cold_start MODEL PHOTO [--threads N]
//
// With DERMAL_SPAWNED_NS (the runner's CLOCK_REALTIME at spawn, in ns), the
// time from spawn to main() is reported too: exec, dynamic linking of
// LibTorch and its static initialisers. Each part's minor page faults (the
// process's first touches of fresh memory) are reported beside its time.
#include <fmt/format.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "dermal/dermal.hpp"
#include "measure.hpp"
#include "model/allocator.hpp"
#include "model/network.hpp"
#include "model/predict.hpp"

using namespace measure;

int main(int argc, char** argv) {
  const auto main_entered = Clock::now();
  nlohmann::json out;
  out["spawn_to_main_page_faults"] = dermal::minor_page_faults();
  if (const char* spawned = std::getenv("DERMAL_SPAWNED_NS")) {
    const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
    out["spawn_to_main_ms"] = (now_ns - std::stoll(spawned)) / 1e6;
  }
  Options options;
  if (!parse_options(argc, argv, "cold_start", options)) return 2;
  try {
    at::set_num_threads(options.threads);  // as dermal::Model does before loading
    const auto read_start = Clock::now();
    const std::vector<std::uint8_t> jpeg = read_file(argv[2]);
    out["photo_read_ms"] = since_ms(read_start);

    const auto load_start = Clock::now();
    std::shared_ptr<const dermal::Network> network;
    {
      dermal::LoadingAllocatorSettings allocator(true);  // LoadOptions::tune_allocator, as the other benchmarks
      network = dermal::load_network(argv[1], "", true, &dermal::onednn_ops_check());
    }
    dermal::release_free_memory();
    out["load_ms"] = since_ms(load_start);
    const dermal::LoadTimes& t = network->load_times;
    for (const auto& [name, part] : {std::pair{"read", t.read}, {"freeze", t.freeze}, {"optimise", t.optimise},
                                     {"compose", t.compose}, {"check", t.check}}) {
      out["load"][std::string(name) + "_ms"] = part.ms;
      out["load"][std::string(name) + "_page_faults"] = part.page_faults;
    }
    const dermal::ProbeComparison& probe = network->probe_comparison;  // fractions of the expected range
    out["probe"] = {{"result", dermal::probe_result_name(network->probe_result)},
                    {"logits_difference", probe.logits_difference}, {"cam_difference", probe.cam_difference},
                    {"tolerance", probe.tolerance}};

    const std::int64_t request_faults = dermal::minor_page_faults();
    const auto request_start = Clock::now();
    dermal::PredictOptions end_to_end;  // JPEG overlay, as a web app returns it
    end_to_end.explain = true;
    const dermal::Prediction result =
        dermal::predict_photo(*network, dermal::decode_image(jpeg.data(), jpeg.size()), end_to_end, true);
    out["first_request_ms"] = since_ms(request_start);
    out["first_request_page_faults"] = dermal::minor_page_faults() - request_faults;
    out["main_to_first_result_ms"] = since_ms(main_entered);
    out["spawn_to_first_result_page_faults"] = dermal::minor_page_faults();
    std::cout << "first-result" << std::endl;
    out["overlay_bytes"] = result.explanations.at(0).overlay.size();
    out["threads"] = options.threads;
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "cold_start: {}\n", e.what());
    return 1;
  }
}
