// LibTorch (through model/network.hpp) before Catch2: see catch2.hpp.
#include "model/network.hpp"
#include <ATen/Parallel.h>
#include "catch2.hpp"

#include <algorithm>
#include <atomic>
#include <dirent.h>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "dermal/dermal.hpp"
#include "read_bytes.hpp"

using dermal::ErrorCode;

namespace {

const std::string kModels = DERMAL_MODEL_FIXTURES;

// The tiny model's expected outputs, computed by Python torch (tools/make_model_fixtures.py).
struct Expected {
  std::vector<float> probabilities;
  int top = 0;
  int cam_width = 0;
  int cam_height = 0;
  std::vector<float> cam;
};

Expected read_expected() {
  std::ifstream file(kModels + "/tiny_expected.txt");
  REQUIRE(file);
  Expected expected;
  std::string line;
  std::getline(file, line);
  std::istringstream probabilities(line);
  for (float p; probabilities >> p;) expected.probabilities.push_back(p);
  file >> expected.top >> expected.cam_width >> expected.cam_height;
  for (float v; file >> v;) expected.cam.push_back(v);
  return expected;
}

ErrorCode load_error(const std::string& path, std::string* message, dermal::LoadOptions options = {}) {
  try {
    dermal::Model model(path, options);
  } catch (const dermal::Error& e) {
    *message = e.what();
    return e.code();
  }
  return ErrorCode::ok;
}

dermal::PredictOptions with_gradcam() {
  dermal::PredictOptions options;
  options.explain = true;
  options.overlay = false;
  options.full_heatmap = true;
  return options;
}

}  // namespace

// The map at CAM resolution stretched as torch's bilinear interpolate
// (align_corners=False) to width x height, then min-max normalised: worked
// out here independently of the library's row-by-row implementation.
std::vector<float> stretched_and_normalised(const dermal::Heatmap& map, int width, int height) {
  const auto tap = [](int out, int in_size, int out_size, int& first, int& second, float& weight) {
    const float source = std::max((out + 0.5f) * in_size / out_size - 0.5f, 0.0f);
    first = std::min(static_cast<int>(source), in_size - 1);
    second = std::min(first + 1, in_size - 1);
    weight = source - first;
  };
  std::vector<float> out(static_cast<std::size_t>(width) * height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      int x0, x1, y0, y1;
      float wx, wy;
      tap(x, map.width, width, x0, x1, wx);
      tap(y, map.height, height, y0, y1, wy);
      const auto at = [&](int r, int c) { return map.values[static_cast<std::size_t>(r) * map.width + c]; };
      const float top = (1 - wx) * at(y0, x0) + wx * at(y0, x1);
      const float bottom = (1 - wx) * at(y1, x0) + wx * at(y1, x1);
      out[static_cast<std::size_t>(y) * width + x] = (1 - wy) * top + wy * bottom;
    }
  const auto [low, high] = std::minmax_element(out.begin(), out.end());
  const float lo = *low, range = *high - *low;
  for (float& v : out) v = (v - lo) / range;
  return out;
}

TEST_CASE("the map at the photo's size spans [0, 1] and is what the overlay shows", "[model]") {
  dermal::Model model(kModels + "/tiny.pt");
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  dermal::PredictOptions options;
  options.full_heatmap = true;
  options.overlay_format = dermal::ImageFormat::png;  // lossless, to compare pixels
  const dermal::Prediction prediction = model.predict(photo.data(), photo.size(), options);
  REQUIRE(prediction.explanations.size() == 1);
  const dermal::Explanation& explanation = prediction.explanations[0];
  REQUIRE_FALSE(explanation.flat);
  const dermal::Heatmap& full = explanation.full_heatmap;
  REQUIRE(full.width == 40);
  REQUIRE(full.height == 32);
  CHECK(*std::min_element(full.values.begin(), full.values.end()) == 0.0f);
  CHECK(*std::max_element(full.values.begin(), full.values.end()) == 1.0f);
  const std::vector<float> expected = stretched_and_normalised(explanation.heatmap, full.width, full.height);
  for (std::size_t i = 0; i < expected.size(); ++i) CHECK(full.values[i] == Approx(expected[i]).margin(1e-5));
  // The overlay colours this same map: equal to rendering it by hand.
  const dermal::Image decoded_photo = dermal::decode_image(photo.data(), photo.size());
  const dermal::Image by_hand = dermal::render_overlay(decoded_photo, full, options.colormap, options.overlay_alpha);
  const dermal::Image overlay = dermal::decode_image(explanation.overlay.data(), explanation.overlay.size());
  CHECK(overlay.rgb == by_hand.rgb);
  // Without the full map, the overlay is unchanged and no map is returned.
  options.full_heatmap = false;
  const dermal::Prediction without = model.predict(photo.data(), photo.size(), options);
  CHECK(without.explanations.at(0).full_heatmap.values.empty());
  CHECK(without.explanations.at(0).overlay == explanation.overlay);
}

TEST_CASE("probabilities equal Python torch's for the same input tensor", "[model]") {
  const Expected expected = read_expected();
  dermal::Model model(kModels + "/tiny.pt");
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  dermal::PredictOptions options;
  options.top_k = 10;
  const dermal::Prediction prediction = model.predict(photo.data(), photo.size(), options);
  REQUIRE(prediction.probabilities.size() == expected.probabilities.size());
  for (std::size_t i = 0; i < expected.probabilities.size(); ++i)
    CHECK(prediction.probabilities[i] == Approx(expected.probabilities[i]).margin(1e-4));
  REQUIRE(prediction.top.size() == 5);  // top_k is capped at the label count
  CHECK(prediction.top[0].index == expected.top);
  for (std::size_t i = 1; i < prediction.top.size(); ++i)
    CHECK(prediction.top[i - 1].probability >= prediction.top[i].probability);
  CHECK(model.description().labels[expected.top] == prediction.top[0].label);
  CHECK(prediction.explanations.size() == 1);  // explain is on unless the call or the load options say otherwise
}

TEST_CASE("Grad-CAM of a pool-then-linear head equals ReLU(sum_k w_ck A^k)", "[model][gradcam]") {
  const Expected expected = read_expected();
  dermal::Model model(kModels + "/tiny.pt");
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  const dermal::Prediction prediction = model.predict(photo.data(), photo.size(), with_gradcam());
  REQUIRE(prediction.explanations.size() == 1);
  const dermal::Explanation& cam = prediction.explanations[0];
  CHECK(cam.class_index == expected.top);
  CHECK_FALSE(cam.flat);
  REQUIRE(cam.heatmap.width == expected.cam_width);
  REQUIRE(cam.heatmap.height == expected.cam_height);
  for (std::size_t i = 0; i < expected.cam.size(); ++i) CHECK(cam.heatmap.values[i] == Approx(expected.cam[i]).margin(1e-4));
  CHECK(cam.full_heatmap.width == 40);
  CHECK(cam.full_heatmap.height == 32);
}

TEST_CASE("every CAM variant equals its published formula applied in Python torch", "[model][gradcam]") {
  // tiny_cams.txt: "method flat values..." at the CAM layer; "method+aug_smooth flat
  // values..." at the input's size (the photo is at the input's size: the full map).
  std::ifstream file(kModels + "/tiny_cams.txt");
  REQUIRE(file);
  dermal::Model model(kModels + "/tiny.pt");
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  int methods = 0, smoothed = 0;
  for (std::string line; std::getline(file, line);) {
    std::istringstream fields(line);
    std::string method;
    int flat = 0;
    fields >> method >> flat;
    std::vector<float> expected;
    for (float v; fields >> v;) expected.push_back(v);
    INFO(method);
    const std::size_t plus = method.find("+aug_smooth");
    dermal::PredictOptions options = with_gradcam();
    options.cam_method = dermal::parse_cam_method(method.substr(0, plus));
    options.aug_smooth = plus != std::string::npos;
    const dermal::Explanation cam = model.predict(photo.data(), photo.size(), options).explanations.at(0);
    CHECK(cam.flat == (flat == 1));
    const dermal::Heatmap& map = options.aug_smooth ? cam.full_heatmap : cam.heatmap;
    REQUIRE(map.values.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) CHECK(map.values[i] == Approx(expected[i]).margin(1e-4));
    ++(options.aug_smooth ? smoothed : methods);
  }
  CHECK(methods == 13);
  CHECK(smoothed == 5);
}

TEST_CASE("faithfulness figures equal the Python reference and are absent unless asked", "[model][gradcam]") {
  // tiny_faithfulness.txt: "method cam_mult_image_change road10 road20 road50 road80" (top class).
  std::ifstream file(kModels + "/tiny_faithfulness.txt");
  REQUIRE(file);
  dermal::Model model(kModels + "/tiny.pt");
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  int methods = 0;
  for (std::string line; std::getline(file, line);) {
    std::istringstream fields(line);
    std::string method;
    float change = 0.0f;
    fields >> method >> change;
    std::vector<float> road;
    for (float v; fields >> v;) road.push_back(v);
    REQUIRE(road.size() == 4);
    INFO(method);
    dermal::PredictOptions options = with_gradcam();
    options.cam_method = dermal::parse_cam_method(method);
    CHECK_FALSE(model.predict(photo.data(), photo.size(), options).explanations.at(0).faithfulness);
    options.faithfulness = true;
    const dermal::Explanation cam = model.predict(photo.data(), photo.size(), options).explanations.at(0);
    REQUIRE(cam.faithfulness);
    // The tiny random model's probabilities move by ~1e-4: compared to 2e-6, not the maps' 1e-4.
    CHECK(cam.faithfulness->cam_mult_image_change == Approx(change).margin(2e-6));
    for (int i = 0; i < 4; ++i) CHECK(cam.faithfulness->road[i] == Approx(road[i]).margin(2e-6));
    ++methods;
  }
  CHECK(methods >= 3);
}

TEST_CASE("the CAM layer sets the map's resolution and unknown layers are refused", "[model][gradcam]") {
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  dermal::LoadOptions options;
  options.cam_layer = "features.0";  // before the stride-2 stage: full 40x32
  dermal::Model early(kModels + "/tiny.pt", options);
  const dermal::Prediction prediction = early.predict(photo.data(), photo.size(), with_gradcam());
  CHECK(prediction.explanations.at(0).heatmap.width == 40);
  CHECK(prediction.explanations.at(0).heatmap.height == 32);
  CHECK(early.cam_layer() == "features.0");

  std::string message;
  options.cam_layer = "features.9";
  CHECK(load_error(kModels + "/tiny.pt", &message, options) == ErrorCode::unknown_layer);
  CHECK_THAT(message, Catch::Matchers::ContainsSubstring("features.9") && Catch::Matchers::ContainsSubstring("features.0, features.1"));
  options.cam_layer = "head";
  CHECK(load_error(kModels + "/tiny.pt", &message, options) == ErrorCode::unknown_layer);
  CHECK_THAT(message, Catch::Matchers::ContainsSubstring("no spatial map"));
}

TEST_CASE("each bad model file gets its own clear error", "[model][errors]") {
  struct Case {
    const char* file;
    ErrorCode code;
    const char* words;
  };
  const Case cases[] = {
      {"missing.pt", ErrorCode::io, "cannot open model file"},
      {"not_a_model.pt", ErrorCode::invalid_model, "not a zip file"},
      {"truncated.pt", ErrorCode::invalid_model, "not a loadable TorchScript model"},
      {"bad_json.pt", ErrorCode::invalid_model, "not a loadable TorchScript model"},
      {"no_description.pt", ErrorCode::invalid_model, "has no dermal.json description"},
      {"malformed_json.pt", ErrorCode::invalid_model, "not valid JSON"},
      {"wrong_labels.pt", ErrorCode::invalid_model, "lists 3 labels"},
      {"wrong_size.pt", ErrorCode::invalid_model, "rejects a 1x3x64x64 input"},
      {"wrong_stage.pt", ErrorCode::invalid_model, "stage \"features.9\""},
  };
  for (const Case& c : cases) {
    INFO(c.file);
    std::string message;
    CHECK(load_error(kModels + "/" + c.file, &message) == c.code);
    CHECK_THAT(message, Catch::Matchers::ContainsSubstring(c.words));
  }
}

TEST_CASE("a network whose output is not finite is an error, not a score", "[model][errors]") {
  dermal::Model model(kModels + "/nan_output.pt");
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  CHECK_THROWS_WITH(model.predict(photo.data(), photo.size()), Catch::Matchers::ContainsSubstring("not finite"));
}

TEST_CASE("lazy loading reads the file once under 8 concurrent first calls", "[model][threads]") {
  dermal::LoadOptions options;
  options.preload = false;
  dermal::Model model(kModels + "/tiny.pt", options);
  CHECK_FALSE(model.loaded());
  CHECK(model.weight_bytes() == 0);
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  std::atomic<int> ready{0};
  std::vector<std::vector<float>> results(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      ++ready;
      while (ready.load() < 8) std::this_thread::yield();  // start together
      results[t] = model.predict(photo.data(), photo.size()).probabilities;
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(model.load_count() == 1);
  CHECK(model.loaded());
  for (int t = 1; t < 8; ++t) CHECK(results[t] == results[0]);
}

TEST_CASE("a model's threads option leaves the host's LibTorch thread settings alone", "[model][threads]") {
  const auto fresh_thread_count = [] {
    int count = 0;
    std::thread([&] { count = at::get_num_threads(); }).join();
    return count;
  };
  const int host = at::get_num_threads();
  const int fresh = fresh_thread_count();  // what a host thread that has not used LibTorch yet starts with
  dermal::LoadOptions options;
  options.threads = std::max(host, fresh) + 2;
  dermal::Model model(kModels + "/tiny.pt", options);
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  model.predict(photo.data(), photo.size());
  CHECK(at::get_num_threads() == host);
  CHECK(fresh_thread_count() == fresh);
}

TEST_CASE("unload frees the network and the next call loads it again", "[model]") {
  dermal::Model model(kModels + "/tiny.pt");
  CHECK(model.loaded());
  // 3 convolutions with biases, 2 batch norms (weight, bias, mean, var, count) and the linear head.
  const std::uint64_t expected_bytes = 4 * ((8 * 3 * 9 + 8) + (16 * 8 * 9 + 16) + (16 * 16 * 9 + 16) + 4 * 8 + 4 * 16 +
                                            (16 * 5 + 5)) + 2 * 8;
  CHECK(model.weight_bytes() == expected_bytes);
  model.unload();
  CHECK_FALSE(model.loaded());
  CHECK(model.weight_bytes() == 0);
  model.unload();  // twice is harmless
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  CHECK(model.predict(photo.data(), photo.size()).top.size() == 3);
  CHECK(model.load_count() == 2);
}

TEST_CASE("Grad-CAM switched off at load refuses heatmap requests", "[model][gradcam]") {
  dermal::LoadOptions options;
  options.explain = false;
  dermal::Model model(kModels + "/tiny.pt", options);
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  CHECK(model.predict(photo.data(), photo.size()).explanations.empty());
  try {
    model.predict(photo.data(), photo.size(), with_gradcam());
    FAIL("a heatmap was made");
  } catch (const dermal::Error& e) {
    CHECK(e.code() == ErrorCode::explain_disabled);
  }
}

TEST_CASE("predict checks its options", "[model][errors]") {
  dermal::Model model(kModels + "/tiny.pt");
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  dermal::PredictOptions options;
  options.top_k = 0;
  CHECK_THROWS_WITH(model.predict(photo.data(), photo.size(), options), Catch::Matchers::ContainsSubstring("top_k"));
  options = with_gradcam();
  options.cam_class = "melanoma";
  try {
    model.predict(photo.data(), photo.size(), options);
    FAIL("an unknown class was explained");
  } catch (const dermal::Error& e) {
    CHECK(e.code() == ErrorCode::unknown_class);
    CHECK_THAT(e.what(), Catch::Matchers::ContainsSubstring("akiec, bcc, mel, nv, vasc"));
  }
  options.cam_class = "vasc";
  const dermal::Prediction prediction = model.predict(photo.data(), photo.size(), options);
  CHECK(prediction.explanations.at(0).label == "vasc");
  CHECK(prediction.explanations.at(0).class_index == 4);
  CHECK_THROWS_WITH(dermal::Model(kModels + "/tiny.pt", dermal::LoadOptions{true, 0}), Catch::Matchers::ContainsSubstring("threads"));
}

TEST_CASE("the bundled demo model classifies the bundled samples", "[model][demo]") {
  dermal::Model model(DERMAL_DEMO_MODEL);
  const std::string samples = DERMAL_SAMPLES;
  DIR* folder = opendir(samples.c_str());
  REQUIRE(folder != nullptr);
  int checked = 0;
  for (dirent* entry; (entry = readdir(folder)) != nullptr;) {
    const std::string name = entry->d_name;
    if (name.size() < 4 || name.substr(name.size() - 4) != ".jpg") continue;
    const std::string label = name.substr(0, name.find('_'));
    const std::vector<std::uint8_t> photo = read_bytes(samples + "/" + name);
    INFO(name);
    CHECK(model.predict(photo.data(), photo.size()).top.at(0).label == label);
    ++checked;
  }
  closedir(folder);
  CHECK(checked >= 6);
}

TEST_CASE("with max_concurrent set, extra callers wait and then get busy", "[model][threads]") {
  dermal::LoadOptions options;
  options.max_concurrent = 1;
  options.queue_timeout_ms = 0;
  dermal::Model model(kModels + "/tiny.pt", options);
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  std::atomic<int> busy{0}, done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        try {
          model.predict(photo.data(), photo.size(), with_gradcam());
          ++done;
        } catch (const dermal::Error& e) {
          if (e.code() == ErrorCode::busy) ++busy;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(done + busy == 200);
  CHECK(done >= 1);
  CHECK(busy >= 1);  // with no waiting allowed, overlapping callers are turned away

  // One caller at a time never waits for a thread, so a zero timeout never refuses it.
  for (int i = 0; i < 100; ++i) CHECK(model.predict(photo.data(), photo.size()).top.size() == 3);

  options.queue_timeout_ms = 60000;  // a generous wait: everyone is served, one at a time
  dermal::Model patient(kModels + "/tiny.pt", options);
  std::atomic<int> served{0};
  threads.clear();
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) served += patient.predict(photo.data(), photo.size()).top.size() == 3;
    });
  for (std::thread& thread : threads) thread.join();
  CHECK(served == 20);
}

TEST_CASE("native bfloat16 is read from /proc/cpuinfo's flags", "[model]") {
  const auto native = [](const std::string& text) {
    std::istringstream cpuinfo(text);
    return dermal::native_bfloat16(cpuinfo);
  };
  CHECK(native("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n"));
  CHECK(native("flags\t\t: fpu amx_bf16 amx_tile\n"));
  CHECK_FALSE(native("flags\t\t: fpu sse avx512f avx512_vnni avx512_bf16x\n"));  // whole flags only
  CHECK_FALSE(native("flags\t\t: fpu avx512f\nbugs\t\t: avx512_bf16\n"));       // the flags line only
  CHECK_FALSE(native(""));
}

TEST_CASE("the oneDNN ISA cap is read as oneDNN reads it", "[model]") {
  const auto cap = [](const char* onednn, const char* dnnl) {
    const dermal::OnednnIsaCap found = dermal::onednn_isa_cap(onednn, dnnl);
    return found.variable + "=" + found.value;
  };
  CHECK(cap(nullptr, nullptr) == "=");
  CHECK(cap("", "") == "=");
  CHECK(cap("AVX2", nullptr) == "ONEDNN_MAX_CPU_ISA=AVX2");
  CHECK(cap(nullptr, "AVX2") == "DNNL_MAX_CPU_ISA=AVX2");
  CHECK(cap("", "AVX2") == "DNNL_MAX_CPU_ISA=AVX2");                        // an empty value counts as unset
  CHECK(cap("AVX512_CORE_BF16", "AVX2") == "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16");  // the newer name wins
}

TEST_CASE("a oneDNN ISA cap below AVX512_CORE_BF16 rules bfloat16 out", "[model]") {
  CHECK(dermal::onednn_allows_bfloat16(""));
  CHECK(dermal::onednn_allows_bfloat16("ALL"));
  CHECK(dermal::onednn_allows_bfloat16("AVX512_CORE_BF16"));
  CHECK(dermal::onednn_allows_bfloat16("avx512_core_amx"));
  CHECK_FALSE(dermal::onednn_allows_bfloat16("AVX2"));
  CHECK_FALSE(dermal::onednn_allows_bfloat16("avx2"));
  CHECK_FALSE(dermal::onednn_allows_bfloat16("AVX512_CORE_VNNI"));
}
