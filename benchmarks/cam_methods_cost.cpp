// Each CAM method's cost against Grad-CAM's, in one process, 1 intra-op
// thread: median latency and peak resident set (VmHWM, reset before each
// request) of predict + the method's map (no overlay), the methods alternated
// round by round, with Grad-CAM + eigen_smooth, Grad-CAM + aug_smooth and
// Grad-CAM + the faithfulness figures among them. Score-CAM (one forward of
// the whole network per CAM-layer channel) runs in the first `slow_rounds`
// rounds only, without a warm-up of its own (its forwards follow the others').
//
//   cam_methods_cost MODEL PHOTO [rounds=11] [slow_rounds=1]
#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"
#include "measure.hpp"

namespace {

using namespace measure;

struct Variant {
  std::string name;
  dermal::PredictOptions options;
  bool slow = false;  // runs in the first slow_rounds rounds only, no warm-up
  std::vector<double> milliseconds;
  std::uint64_t peak = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: cam_methods_cost MODEL PHOTO [rounds=11] [slow_rounds=1]\n");
    return 2;
  }
  const int rounds = argc > 3 ? std::stoi(argv[3]) : 11;
  const int slow_rounds = argc > 4 ? std::stoi(argv[4]) : 1;
  const std::vector<std::uint8_t> photo = read_file(argv[2]);
  try {
    dermal::LoadOptions load_options;  // 1 intra-op thread
    load_options.tune_allocator = true;
    dermal::Model model(argv[1], load_options);
    std::vector<Variant> variants;
    dermal::PredictOptions plain;
    plain.explain = false;
    variants.push_back({"no map (predict only)", plain});
    for (const char* name : {"gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam",
                             "gradcamelementwise", "eigengradcam", "finercam", "fem", "kpcacam", "ablationcam",
                             "scorecam"}) {
      dermal::PredictOptions options;
      options.explain = true;
      options.overlay = false;
      options.cam_method = dermal::parse_cam_method(name);
      variants.push_back({name, options, options.cam_method == dermal::CamMethod::scorecam});
    }
    dermal::PredictOptions smooth;
    smooth.explain = true;
    smooth.overlay = false;
    smooth.eigen_smooth = true;
    variants.push_back({"gradcam + eigen_smooth", smooth});
    dermal::PredictOptions augmented = smooth;
    augmented.eigen_smooth = false;
    augmented.aug_smooth = true;
    variants.push_back({"gradcam + aug_smooth", augmented});
    dermal::PredictOptions faithful;
    faithful.explain = true;
    faithful.overlay = false;
    faithful.faithfulness = true;
    variants.push_back({"gradcam + faithfulness", faithful});

    for (Variant& v : variants)  // warm-up: the executor optimises each graph on its first runs
      for (int i = 0; i < 2 && !v.slow; ++i) model.predict(photo.data(), photo.size(), v.options);
    for (int round = 0; round < rounds; ++round)
      for (Variant& v : variants) {
        if (v.slow && round >= slow_rounds) continue;
        reset_peak();
        const auto start = Clock::now();
        model.predict(photo.data(), photo.size(), v.options);
        v.milliseconds.push_back(since_ms(start));
        v.peak = std::max(v.peak, dermal::memory_status().peak_rss_bytes);
      }
    const double gradcam_ms = median(variants[1].milliseconds);
    fmt::print("| method | runs | median ms | x Grad-CAM | peak RSS MB |\n|---|---:|---:|---:|---:|\n");
    for (Variant& v : variants)
      fmt::print("| {} | {} | {:.1f} | {:.2f} | {:.1f} |\n", v.name, v.milliseconds.size(), median(v.milliseconds),
                 median(v.milliseconds) / gradcam_ms, mb(v.peak));
    fmt::print("\n{} rounds (Score-CAM: {}), methods alternated within each round; peak = VmHWM reset before each "
               "request.\n", rounds, std::min(rounds, slow_rounds));
  } catch (const dermal::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
