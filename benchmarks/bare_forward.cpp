// The floor: plain LibTorch on an already preprocessed tensor. Loads the
// whole model file, freezes it, optimises it for inference and times its
// forward under InferenceMode; prints one JSON object on stdout.
//
//   bare_forward MODEL PHOTO [--threads N] [--repeats N] [--warmup N]
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

namespace {

using Clock = std::chrono::steady_clock;

double mb(std::uint64_t bytes) { return bytes / 1e6; }

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double since_ms(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: bare_forward MODEL PHOTO [--threads N] [--repeats N] [--warmup N]\n");
    return 2;
  }
  int threads = 1, repeats = 15, warmup = 3;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int value = std::stoi(argv[i + 1]);
    if (flag == "--threads") threads = value;
    else if (flag == "--repeats") repeats = value;
    else if (flag == "--warmup") warmup = value;
    else {
      fmt::print(stderr, "bare_forward: unknown option {}\n", flag);
      return 2;
    }
  }
  at::set_num_threads(threads);
  nlohmann::json out;
  out["baseline_rss_mb"] = mb(dermal::memory_status().current_rss_bytes);

  const auto load_start = Clock::now();
  torch::jit::ExtraFilesMap extra{{"dermal.json", ""}};
  torch::jit::Module module = torch::jit::load(argv[1], torch::kCPU, extra);
  module.eval();
  torch::jit::Module frozen = torch::jit::freeze(module);
  module = torch::jit::optimize_for_inference(frozen);
  out["load_ms"] = since_ms(load_start);
  out["load_peak_mb"] = mb(dermal::memory_status().peak_rss_bytes);

  const dermal::ModelDescription description = dermal::parse_description(extra["dermal.json"]);
  std::ifstream file(argv[2], std::ios::binary);
  const std::vector<std::uint8_t> jpeg{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  std::vector<float> input = dermal::preprocess(dermal::decode_image(jpeg.data(), jpeg.size()), description);
  const torch::Tensor x = torch::from_blob(input.data(), {1, 3, description.input_height, description.input_width});

  c10::InferenceMode inference;
  module.forward({x});
  std::cout << "first-result" << std::endl;  // for the runner's cold-start timing
  for (int i = 1; i < warmup; ++i) module.forward({x});
  std::vector<double> milliseconds;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    module.forward({x});
    milliseconds.push_back(since_ms(start));
  }
  out["forward_median_ms"] = median(milliseconds);
  out["runs"] = repeats;
  out["process_peak_mb"] = mb(dermal::memory_status().peak_rss_bytes);
  out["threads"] = threads;
  std::cout << out.dump() << std::endl;
  return 0;
}
