// Measures what Grad-CAM adds to a prediction, in one process, 1 thread:
// peak resident set (VmHWM, reset through /proc/self/clear_refs) and median
// latency of predict alone vs predict + Grad-CAM + overlay, then the
// resident-set drift over consecutive Grad-CAM requests.
//
//   gradcam_cost MODEL PHOTO [repeats=15] [drift_requests=200]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"
#include "measure.hpp"

namespace {

using namespace measure;

struct Phase {
  std::vector<double> milliseconds;
  std::uint64_t peak = 0;
};

// One request, timed; the peak resident set is tracked from a reset before it.
void time_request(dermal::Model& model, const std::vector<std::uint8_t>& photo, const dermal::PredictOptions& options,
             Phase& phase) {
  reset_peak();
  const auto start = Clock::now();
  model.predict(photo.data(), photo.size(), options);
  phase.milliseconds.push_back(since_ms(start));
  phase.peak = std::max(phase.peak, dermal::memory_status().peak_rss_bytes);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: gradcam_cost MODEL PHOTO [repeats=15] [drift_requests=200]\n");
    return 2;
  }
  const int repeats = argc > 3 ? std::stoi(argv[3]) : 15;
  const int drift_requests = argc > 4 ? std::stoi(argv[4]) : 200;
  const std::vector<std::uint8_t> photo = read_file(argv[2]);

  try {
    dermal::LoadOptions load_options;  // 1 intra-op thread, Grad-CAM possible
    load_options.tune_allocator = true;
    dermal::Model model(argv[1], load_options);
    dermal::PredictOptions plain;
    plain.explain = false;
    dermal::PredictOptions explained;
    explained.explain = true;
    explained.overlay = true;

    // Warm-up: TorchScript's executor optimises each graph on its first runs.
    for (int i = 0; i < 3; ++i) {
      model.predict(photo.data(), photo.size(), plain);
      model.predict(photo.data(), photo.size(), explained);
    }
    const std::uint64_t idle = dermal::memory_status().current_rss_bytes;
    Phase alone, with_cam;
    for (int i = 0; i < repeats; ++i) {  // interleaved, so machine noise hits both alike
      time_request(model, photo, plain, alone);
      time_request(model, photo, explained, with_cam);
    }
    const double peak_ratio = static_cast<double>(with_cam.peak) / alone.peak;
    const double latency_ratio = median(with_cam.milliseconds) / median(alone.milliseconds);
    fmt::print("model: {} ({:.1f} MB of weights), photo: {} ({} bytes), {} repeats, 1 thread\n", argv[1],
               mb(model.weight_bytes()), argv[2], photo.size(), repeats);
    fmt::print("resident set after warm-up:          {:8.1f} MB\n", mb(idle));
    fmt::print("peak RSS, predict alone:             {:8.1f} MB\n", mb(alone.peak));
    fmt::print("peak RSS, predict + Grad-CAM:        {:8.1f} MB   ratio {:.3f} (target <= 1.05)\n", mb(with_cam.peak),
               peak_ratio);
    fmt::print("median latency, predict alone:       {:8.1f} ms\n", median(alone.milliseconds));
    fmt::print("median latency, predict + Grad-CAM:  {:8.1f} ms   ratio {:.3f} (target <= 1.15)\n",
               median(with_cam.milliseconds), latency_ratio);

    model.predict(photo.data(), photo.size(), explained);
    const std::uint64_t after_first = dermal::memory_status().current_rss_bytes;
    for (int i = 1; i < drift_requests; ++i) model.predict(photo.data(), photo.size(), explained);
    const std::uint64_t after_all = dermal::memory_status().current_rss_bytes;
    const double drift = mb(after_all) - mb(after_first);
    fmt::print("RSS after 1 / {} Grad-CAM requests:  {:.1f} / {:.1f} MB   drift {:+.1f} MB (target <= 5)\n",
               drift_requests, mb(after_first), mb(after_all), drift);
    const bool met = peak_ratio <= 1.05 && latency_ratio <= 1.15 && drift <= 5.0;
    fmt::print("targets {}\n", met ? "met" : "NOT met");
    return met ? 0 : 1;
  } catch (const dermal::Error& e) {
    fmt::print(stderr, "gradcam_cost: {}: {}\n", dermal::error_code_name(e.code()), e.what());
    return 1;
  }
}
