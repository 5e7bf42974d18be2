// The floor: plain LibTorch on an already preprocessed tensor. Loads the
// whole model file, freezes it, optimises it for inference (unless
// --optimise 0) and times its forward under InferenceMode; prints one JSON
// object on stdout.
//
//   bare_forward MODEL PHOTO [--threads N] [--repeats N] [--warmup N] [--optimise 0|1]
//
// PHOTO is decoded and preprocessed by dermal before anything is timed, so
// that the input is the same as dermal's. Prints "first-result" after the
// first forward, for a runner timing the cold start from outside.
#include <fmt/format.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"
#include "image/preprocess.hpp"
#include "measure.hpp"

using namespace measure;

int main(int argc, char** argv) {
  Options options;
  if (!parse_options(argc, argv, "bare_forward", options)) return 2;
  const int threads = options.threads, repeats = options.repeats, warmup = options.warmup;
  at::set_num_threads(threads);
  nlohmann::json out;
  out["baseline_rss_mb"] = mb(dermal::memory_status().current_rss_bytes);

  const auto load_start = Clock::now();
  torch::jit::ExtraFilesMap extra{{"dermal.json", ""}};
  torch::jit::Module module = torch::jit::load(argv[1], torch::kCPU, extra);
  module.eval();
  torch::jit::Module frozen = torch::jit::freeze(module);
  module = options.optimise ? torch::jit::optimize_for_inference(frozen) : frozen;
  out["load_ms"] = since_ms(load_start);
  out["load_peak_mb"] = mb(dermal::memory_status().peak_rss_bytes);
  out["rss_after_load_mb"] = mb(dermal::memory_status().current_rss_bytes);
  const Resident loaded = resident();
  out["rss_anon_after_load_mb"] = loaded.anon_mb;
  out["rss_file_after_load_mb"] = loaded.file_mb;

  const dermal::ModelDescription description = dermal::parse_description(extra["dermal.json"]);
  const std::vector<std::uint8_t> jpeg = read_file(argv[2]);
  std::vector<float> input = dermal::preprocess(dermal::decode_image(jpeg.data(), jpeg.size()), description);
  const torch::Tensor x = torch::from_blob(input.data(), {1, 3, description.input_height, description.input_width});

  c10::InferenceMode inference;
  module.forward({x});
  std::cout << "first-result" << std::endl;  // for the runner's cold-start timing
  for (int i = 1; i < warmup; ++i) module.forward({x});
  std::vector<double> milliseconds, cpu_milliseconds;
  for (int i = 0; i < repeats; ++i) {
    const double cpu_start = process_cpu_ms();
    const auto start = Clock::now();
    module.forward({x});
    milliseconds.push_back(since_ms(start));
    cpu_milliseconds.push_back(process_cpu_ms() - cpu_start);
  }
  out["forward_median_ms"] = median(milliseconds);
  out["forward_median_cpu_ms"] = median(cpu_milliseconds);
  out["runs"] = repeats;
  out["process_peak_mb"] = mb(dermal::memory_status().peak_rss_bytes);
  out["threads"] = threads;
  out["optimised"] = options.optimise != 0;
  std::cout << out.dump() << std::endl;
  return 0;
}
