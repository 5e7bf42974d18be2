// Times dermal stage by stage in one fresh process and reports the peak
// resident set (VmHWM) of each stage, as one JSON object on stdout.
//
//   dermal_stages MODEL PHOTO [--threads N] [--repeats N] [--warmup N] [--optimise 0|1]
//
// Prints "first-result" (flushed) as soon as the first end-to-end Grad-CAM
// request (encoded photo in, encoded overlay out) has returned, so that a
// runner can time the cold start from outside. Every stage's peak is taken
// from a reset of VmHWM (/proc/self/clear_refs) just before it; the process
// peak folds in VmHWM before every reset, so it is the whole run's peak.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"
#include "image/preprocess.hpp"
#include "measure.hpp"

namespace {

using namespace measure;

std::uint64_t process_peak = 0;  // VmHWM of the whole run, reset or not

// Restarts VmHWM from the current resident set, keeping process_peak exact.
void reset_peak_keeping_max() {
  process_peak = std::max(process_peak, dermal::memory_status().peak_rss_bytes);
  reset_peak();
}

// Latencies, CPU times and the highest resident set seen while a stage ran.
struct Stage {
  std::vector<double> milliseconds, cpu_milliseconds;
  std::uint64_t peak = 0;

  // Runs f once, timed, with VmHWM reset just before it.
  template <typename F>
  void run(F&& f) {
    reset_peak_keeping_max();
    const double cpu_start = process_cpu_ms();
    const auto start = Clock::now();
    f();
    milliseconds.push_back(since_ms(start));
    cpu_milliseconds.push_back(process_cpu_ms() - cpu_start);
    peak = std::max(peak, dermal::memory_status().peak_rss_bytes);
  }

  nlohmann::json json() const {
    return {{"median_ms", median(milliseconds)}, {"median_cpu_ms", median(cpu_milliseconds)},
            {"runs", milliseconds.size()}, {"peak_mb", mb(peak)}};
  }
};

}  // namespace

int main(int argc, char** argv) {
  const auto process_start = Clock::now();
  Options options;
  if (!parse_options(argc, argv, "dermal_stages", options)) return 2;
  const int threads = options.threads, repeats = options.repeats, warmup = options.warmup;
  const std::vector<std::uint8_t> jpeg = read_file(argv[2]);

  try {
    nlohmann::json out;
    out["baseline_rss_mb"] = mb(dermal::memory_status().current_rss_bytes);
    const Resident baseline = resident();
    out["baseline_rss_anon_mb"] = baseline.anon_mb;
    out["baseline_rss_file_mb"] = baseline.file_mb;

    dermal::LoadOptions load_options;
    load_options.threads = threads;
    load_options.tune_allocator = true;  // the configuration the README's figures describe
    load_options.optimise = options.optimise != 0;
    load_options.release_memory_after_predict = options.release_memory_after_predict != 0;
    out["release_memory_after_predict"] = load_options.release_memory_after_predict;
    const auto load_start = Clock::now();
    dermal::Model model(argv[1], load_options);
    out["load_ms"] = since_ms(load_start);
    const dermal::MemoryStatus after_load = dermal::memory_status();
    out["load_peak_mb"] = mb(after_load.peak_rss_bytes);
    out["rss_after_load_mb"] = mb(after_load.current_rss_bytes);
    const Resident loaded = resident();
    out["rss_anon_after_load_mb"] = loaded.anon_mb;
    out["rss_file_after_load_mb"] = loaded.file_mb;
    out["weight_mb"] = mb(model.weight_bytes());
    const dermal::ModelDescription& description = model.description();

    dermal::PredictOptions plain;
    plain.explain = false;
    dermal::PredictOptions cam_only;  // Grad-CAM heatmap, no overlay image
    cam_only.explain = true;
    cam_only.overlay = false;
    cam_only.full_heatmap = true;  // the map the overlay stage below colours
    dermal::PredictOptions end_to_end;  // JPEG overlay, as a web app returns it
    end_to_end.explain = true;

    Stage first;
    first.run([&] { model.predict(jpeg.data(), jpeg.size(), end_to_end); });
    std::cout << "first-result" << std::endl;
    out["first_request_ms"] = first.milliseconds[0];
    out["first_request_peak_mb"] = mb(first.peak);
    out["in_process_cold_start_ms"] = since_ms(process_start);

    const dermal::Image photo = dermal::decode_image(jpeg.data(), jpeg.size());
    const dermal::Prediction explained = model.predict(photo, cam_only);
    for (int i = 0; i < warmup; ++i) {
      model.predict(photo, plain);
      model.predict(photo, cam_only);
      model.predict(jpeg.data(), jpeg.size(), end_to_end);
    }

    // The model's own preprocessing beside the float bilinear resize and
    // PIL's 8-bit BILINEAR and LANCZOS (input.resample), on the same photo.
    std::map<std::string, dermal::ModelDescription> resizes = {
        {"decode_preprocess_float", description},
        {"decode_preprocess_pil_bilinear", description},
        {"decode_preprocess_pil_lanczos", description}};
    resizes["decode_preprocess_float"].resample.reset();
    resizes["decode_preprocess_pil_bilinear"].resample = dermal::ResampleFilter::bilinear;
    resizes["decode_preprocess_pil_lanczos"].resample = dermal::ResampleFilter::lanczos;

    std::map<std::string, Stage> stages;
    for (int i = 0; i < repeats; ++i) {  // interleaved, so machine noise hits every stage alike
      stages["decode_preprocess"].run([&] {
        const dermal::Image decoded = dermal::decode_image(jpeg.data(), jpeg.size());
        dermal::preprocess(decoded, description);
      });
      for (const auto& [name, resize] : resizes)
        stages[name].run([&] {
          const dermal::Image decoded = dermal::decode_image(jpeg.data(), jpeg.size());
          dermal::preprocess(decoded, resize);
        });
      stages["predict"].run([&] { model.predict(photo, plain); });
      stages["end_to_end_predict"].run([&] { model.predict(jpeg.data(), jpeg.size(), plain); });
      stages["predict_gradcam"].run([&] { model.predict(photo, cam_only); });
      stages["overlay_render_encode"].run([&] {
        dermal::encode_image(dermal::render_overlay(photo, explained.explanations[0].full_heatmap, end_to_end.colormap,
                                                    end_to_end.overlay_alpha),
                             end_to_end.overlay_format, end_to_end.jpeg_quality);
      });
      stages["end_to_end_gradcam"].run([&] { model.predict(jpeg.data(), jpeg.size(), end_to_end); });
    }
    for (const auto& [name, stage] : stages) out["stages"][name] = stage.json();
    reset_peak_keeping_max();
    out["process_peak_mb"] = mb(process_peak);
    out["rss_end_mb"] = mb(dermal::memory_status().current_rss_bytes);
    const Resident end = resident();
    out["rss_anon_end_mb"] = end.anon_mb;
    out["rss_file_end_mb"] = end.file_mb;
    out["threads"] = threads;
    out["optimise"] = load_options.optimise;
    out["probe_result"] = dermal::probe_result_name(model.probe_result());
    out["top1"] = explained.top[0].label;
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const dermal::Error& e) {
    fmt::print(stderr, "dermal_stages: {}: {}\n", dermal::error_code_name(e.code()), e.what());
    return 1;
  }
}
