// One model under many threads, and the resident set over many requests.
// Quick by default; DERMAL_LONG_TESTS=1 runs ten times as many requests.
// Measured figures are printed with WARN so that they appear in the log.
#include "catch2.hpp"

#include <atomic>
#include <cstdlib>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <fstream>
#include <iterator>
#include <thread>

#include "dermal/dermal.hpp"
#include "read_bytes.hpp"

using dermal::ErrorCode;

namespace {

const std::string kModels = DERMAL_MODEL_FIXTURES;
const std::string kBadInputs = DERMAL_BAD_INPUTS;
constexpr double kMB = 1024.0 * 1024.0;

bool long_mode() {
  const char* value = std::getenv("DERMAL_LONG_TESTS");
  return value != nullptr && std::string(value) == "1";
}

// A smooth, textured synthetic photo encoded as JPEG.
std::vector<std::uint8_t> synthetic_jpeg(int width, int height) {
  dermal::Image image;
  image.width = width;
  image.height = height;
  image.rgb.resize(static_cast<std::size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      std::uint8_t* p = &image.rgb[(static_cast<std::size_t>(y) * width + x) * 3];
      p[0] = static_cast<std::uint8_t>(x * 255 / width);
      p[1] = static_cast<std::uint8_t>(y * 255 / height);
      p[2] = static_cast<std::uint8_t>((x * 7 + y * 13) % 97 + 80);
    }
  return dermal::encode_image(image, dermal::ImageFormat::jpeg, 85);
}

double rss_mb() { return dermal::memory_status().current_rss_bytes / kMB; }
double peak_mb() { return dermal::memory_status().peak_rss_bytes / kMB; }

// Resets the peak (VmHWM) to the current resident set.
void reset_peak() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

// What one request gave: an error code, or the scores and maps.
struct Outcome {
  ErrorCode code = ErrorCode::ok;
  std::vector<float> probabilities;
  std::vector<std::vector<float>> heatmaps;
  std::vector<std::vector<std::uint8_t>> overlays;

  bool operator==(const Outcome& other) const {
    return code == other.code && probabilities == other.probabilities && heatmaps == other.heatmaps &&
           overlays == other.overlays;
  }
};

Outcome run(dermal::Model& model, const std::vector<std::uint8_t>& photo, const dermal::PredictOptions& options) {
  Outcome outcome;
  try {
    dermal::Prediction prediction = model.predict(photo.data(), photo.size(), options);
    outcome.probabilities = std::move(prediction.probabilities);
    for (dermal::Explanation& cam : prediction.explanations) {
      outcome.heatmaps.push_back(std::move(cam.heatmap.values));
      outcome.overlays.push_back(std::move(cam.overlay));
    }
  } catch (const dermal::Error& e) {
    outcome.code = e.code();
  }
  return outcome;
}

// Good and bad photos, with and without Grad-CAM: what a busy web app sees.
struct Mix {
  std::vector<std::vector<std::uint8_t>> photos;
  std::vector<dermal::PredictOptions> options;
  std::size_t size() const { return photos.size() * options.size(); }
  const std::vector<std::uint8_t>& photo(std::size_t i) const { return photos[i % photos.size()]; }
  const dermal::PredictOptions& option(std::size_t i) const { return options[i / photos.size()]; }
};

Mix request_mix() {
  Mix mix;
  mix.photos.push_back(read_bytes(kModels + "/tiny_input.png"));
  mix.photos.push_back(synthetic_jpeg(96, 64));
  for (const char* name : {"one_pixel.jpg", "progressive.jpg", "interlaced.png", "empty.jpg", "truncated_jpeg_in_scan.jpg",
                           "cmyk.jpg", "huge_declared.png", "bad_zlib_stream.png", "photo.webp"})
    mix.photos.push_back(read_bytes(kBadInputs + "/" + name));
  dermal::PredictOptions plain;
  plain.explain = false;
  dermal::PredictOptions gradcam;
  gradcam.explain = true;
  dermal::PredictOptions two_maps;
  two_maps.cam_method = dermal::CamMethod::gradcam_plus_plus;
  two_maps.cam_top_k = 2;
  two_maps.overlay_format = dermal::ImageFormat::png;
  mix.options = {plain, gradcam, two_maps};
  return mix;
}

}  // namespace

TEST_CASE("8 threads of mixed requests give exactly the sequential results", "[model][threads]") {
  dermal::Model model(kModels + "/tiny.pt");
  const Mix mix = request_mix();
  std::vector<Outcome> sequential;
  for (std::size_t i = 0; i < mix.size(); ++i) sequential.push_back(run(model, mix.photo(i), mix.option(i)));
  int good = 0;
  for (const Outcome& outcome : sequential) good += outcome.code == ErrorCode::ok;
  REQUIRE(good == 15);  // 5 good photos x 3 option sets; the 6 bad ones are refused

  const int per_thread = long_mode() ? 2000 : 200;
  std::atomic<int> same{0}, different{0}, errors{0}, other_failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int r = 0; r < per_thread; ++r) {
        const std::size_t i = (static_cast<std::size_t>(t) * 7 + r * 13) % mix.size();
        try {
          const Outcome outcome = run(model, mix.photo(i), mix.option(i));
          (outcome == sequential[i] ? same : different)++;
          errors += outcome.code != ErrorCode::ok;
        } catch (...) {
          ++other_failures;  // anything but dermal::Error
        }
      }
    });
  for (std::thread& thread : threads) thread.join();
  WARN("8 threads x " << per_thread << " requests: " << same << " identical to sequential, " << different
                      << " different, " << errors << " clean errors, " << other_failures << " other failures");
  CHECK(same == 8 * per_thread);
  CHECK(different == 0);
  CHECK(other_failures == 0);
  CHECK(errors > 0);
}

// With the host leaving malloc as it is, 8 host threads calling predict()
// on a model with `threads` inference threads peak at about idle + threads x
// what requests made one at a time use. Idle is measured when loaded, before
// the first request starts the inference threads. (With 2 threads, requests
// one at a time already alternate between them, so that bound is loose.)
void check_peak_is_bounded_by_threads(int threads) {
  dermal::LoadOptions load;
  load.max_concurrent = threads;
  load.queue_timeout_ms = 600000;
  dermal::Model model(kModels + "/tiny_512.pt", load);
  const std::vector<std::uint8_t> photo = synthetic_jpeg(640, 480);
  dermal::PredictOptions options;
  options.explain = true;
  const int per_thread = long_mode() ? 25 : 3;
  const double idle = rss_mb();
  reset_peak();
  // As many requests one at a time as the 8 host threads make below, so that
  // both peaks are the largest of as many requests.
  for (int i = 0; i < 8 * per_thread; ++i) model.predict(photo.data(), photo.size(), options);
  const double one_at_a_time = peak_mb() - idle;

  reset_peak();
  std::atomic<int> served{0};
  std::vector<std::thread> host_threads;
  for (int t = 0; t < 8; ++t)
    host_threads.emplace_back([&] {
      for (int r = 0; r < per_thread; ++r) served += !model.predict(photo.data(), photo.size(), options).top.empty();
    });
  for (std::thread& thread : host_threads) thread.join();
  CHECK(served == 8 * per_thread);
  const double peak = peak_mb();
  const double bound = idle + threads * one_at_a_time + 10;
  WARN("tiny_512, max_concurrent " << threads << ", 8 host threads x " << per_thread << " requests, default malloc: idle "
                                   << idle << " MB, requests one at a time +" << one_at_a_time << " MB, peak " << peak
                                   << " MB, bound " << bound << " MB");
  CHECK(one_at_a_time > 10);  // a request's memory is measurable with this model
  CHECK(peak <= bound);
}

// Two test cases, so each runs in a process of its own (arenas outlive threads).
TEST_CASE("one inference thread bounds the peak, whatever the host's threads", "[model][threads][memory]") {
  check_peak_is_bounded_by_threads(1);
}

TEST_CASE("two inference threads bound the peak, whatever the host's threads", "[model][threads][memory]") {
  check_peak_is_bounded_by_threads(2);
}

TEST_CASE("many requests leave the resident set where it was", "[model][memory]") {
  dermal::Model model(kModels + "/tiny.pt");
  Mix mix = request_mix();
  mix.photos.push_back(synthetic_jpeg(640, 480));  // a phone-sized photo and its full-size overlay
  auto serve = [&](int requests) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (int r = t; r < requests; r += 4) run(model, mix.photo(r % mix.size()), mix.option(r % mix.size()));
      });
    for (std::thread& thread : threads) thread.join();
  };
  serve(100);  // warm-up
  const double before = rss_mb();
  const int requests = long_mode() ? 2000 : 300;
  serve(requests);
  const double after = rss_mb();
  WARN(requests << " requests: resident set " << before << " MB before, " << after << " MB after, drift "
                << after - before << " MB");
  CHECK(after - before <= 5);
}

TEST_CASE("after one very large photo the resident set returns near where it was", "[model][memory]") {
  dermal::Model model(kModels + "/tiny.pt");
  const std::vector<std::uint8_t> huge = synthetic_jpeg(6000, 4000);
  const std::vector<std::uint8_t> small = synthetic_jpeg(96, 64);
  dermal::PredictOptions options;
  options.explain = true;
  options.full_heatmap = true;
  for (int i = 0; i < 5; ++i) model.predict(small.data(), small.size(), options);
  const double before = rss_mb();
  reset_peak();
  {
    const dermal::Prediction prediction = model.predict(huge.data(), huge.size(), options);
    CHECK(prediction.explanations.at(0).full_heatmap.width == 6000);
  }
  const double peak = peak_mb();
  const double after = rss_mb();  // the caller has dropped the result
  model.predict(small.data(), small.size(), options);
  const double after_next = rss_mb();
  WARN("6000x4000 JPEG (" << huge.size() / kMB << " MB): resident set " << before << " MB before, peak " << peak
                          << " MB, " << after << " MB after, " << after_next
                          << " MB after the next small request");
  CHECK(peak - before > 100);  // the photo really was large in memory
  CHECK(after - before <= 10);
  CHECK(after_next - before <= 10);
}

#ifdef __GLIBC__
// Bytes glibc maps for a 20 MiB block allocated now (0: it came from the heap).
std::size_t mapped_for_a_20_mib_block() {
  const std::size_t before = mallinfo2().hblkhd;
  auto* block = static_cast<volatile char*>(std::malloc(20 << 20));
  block[0] = 1;
  const std::size_t mapped = mallinfo2().hblkhd - before;
  std::free(const_cast<char*>(block));
  return mapped;
}

// What tune_allocator promises after the load: blocks under 32 MiB come from
// the heap. Each test case runs in a process of its own (the setting is
// process-wide); the second shows glibc's default, so the first can fail.
TEST_CASE("after a load with tune_allocator, blocks under 32 MiB come from the heap", "[model][memory]") {
  dermal::LoadOptions load;
  load.tune_allocator = true;
  dermal::Model model(kModels + "/tiny.pt", load);
  CHECK(mapped_for_a_20_mib_block() == 0);
}

TEST_CASE("without tune_allocator, glibc maps a 20 MiB block", "[model][memory]") {
  dermal::Model model(kModels + "/tiny.pt");
  CHECK(mapped_for_a_20_mib_block() >= (20u << 20));
}

// Resident set growth (MB) after one 1500x1000 photo (decoded and overlaid:
// 4.5 MB each, from the heap under tune_allocator), after warm-up requests.
// (A 3000x2000 photo gets a glibc heap of its own, unmapped when freed.)
double growth_after_a_large_photo(bool release_memory_after_predict) {
  dermal::LoadOptions load;
  load.tune_allocator = true;
  load.release_memory_after_predict = release_memory_after_predict;
  dermal::Model model(kModels + "/tiny.pt", load);
  const std::vector<std::uint8_t> large = synthetic_jpeg(1500, 1000);
  const std::vector<std::uint8_t> small = synthetic_jpeg(96, 64);
  for (int i = 0; i < 5; ++i) model.predict(small.data(), small.size());
  const double before = rss_mb();
  model.predict(large.data(), large.size());
  const double growth = rss_mb() - before;
  WARN("release_memory_after_predict " << release_memory_after_predict << ": resident set +" << growth
                                       << " MB after a 1500x1000 photo");
  return growth;
}

// The pair shows what the option changes (each case in a process of its own).
TEST_CASE("by default the memory a prediction freed goes back to the system", "[model][memory]") {
  CHECK(growth_after_a_large_photo(true) <= 3);  // measured +0.4
}

TEST_CASE("release_memory_after_predict false keeps it for the next request", "[model][memory]") {
  CHECK(growth_after_a_large_photo(false) >= 6);  // measured +9.1
}
#endif
