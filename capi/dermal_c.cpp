// The C ABI over dermal::Model. Every entry point runs inside guarded(),
// which turns any C++ exception into a dermal_status and a thread-local
// message: nothing C++ crosses the boundary.
#include "dermal/dermal.h"

#include <algorithm>
#include <iterator>
#include <new>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"

struct dermal_load_options {
  dermal::LoadOptions options;
};

struct dermal_predict_options {
  dermal::PredictOptions options;
};

struct dermal_model {
  // Loading on first use is not a visible change, so the const getters may do it.
  mutable dermal::Model model;
};

struct dermal_result {
  dermal::Prediction prediction;
};

namespace {

using dermal::ErrorCode;

#define DERMAL_SAME_NUMBER(status, code) \
  static_assert(static_cast<int>(status) == static_cast<int>(ErrorCode::code), #status " differs from ErrorCode")
DERMAL_SAME_NUMBER(DERMAL_OK, ok);
DERMAL_SAME_NUMBER(DERMAL_INVALID_ARGUMENT, invalid_argument);
DERMAL_SAME_NUMBER(DERMAL_IO, io);
DERMAL_SAME_NUMBER(DERMAL_INVALID_IMAGE, invalid_image);
DERMAL_SAME_NUMBER(DERMAL_UNSUPPORTED_IMAGE, unsupported_image);
DERMAL_SAME_NUMBER(DERMAL_IMAGE_TOO_LARGE, image_too_large);
DERMAL_SAME_NUMBER(DERMAL_INVALID_MODEL, invalid_model);
DERMAL_SAME_NUMBER(DERMAL_MODEL_NOT_LOADED, model_not_loaded);
DERMAL_SAME_NUMBER(DERMAL_UNKNOWN_LAYER, unknown_layer);
DERMAL_SAME_NUMBER(DERMAL_UNKNOWN_CLASS, unknown_class);
DERMAL_SAME_NUMBER(DERMAL_OUT_OF_MEMORY, out_of_memory);
DERMAL_SAME_NUMBER(DERMAL_INTERNAL, internal);
DERMAL_SAME_NUMBER(DERMAL_EXPLAIN_DISABLED, explain_disabled);
DERMAL_SAME_NUMBER(DERMAL_BUSY, busy);
DERMAL_SAME_NUMBER(DERMAL_NUMERICS_MISMATCH, numerics_mismatch);
#undef DERMAL_SAME_NUMBER

thread_local std::string last_error_text;
thread_local const char* last_error = "";  // last_error_text, or a literal when copying it failed

void set_last_error(const char* message) noexcept {
  try {
    last_error_text.assign(message);
    last_error = last_error_text.c_str();
  } catch (...) {
    last_error = "out of memory while recording an error message";
  }
}

// Runs body; returns DERMAL_OK, or the failure's status with its message recorded.
template <typename F>
dermal_status guarded(F&& body) noexcept {
  try {
    last_error = "";
    body();
    return DERMAL_OK;
  } catch (const dermal::Error& e) {
    set_last_error(e.what());
    return static_cast<dermal_status>(e.code());
  } catch (const std::bad_alloc&) {
    set_last_error("out of memory");
    return DERMAL_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(e.what());
    return DERMAL_INTERNAL;
  } catch (...) {
    set_last_error("an unknown C++ exception");
    return DERMAL_INTERNAL;
  }
}

[[noreturn]] void invalid(const std::string& message) { throw dermal::Error(ErrorCode::invalid_argument, message); }

// Throws invalid_argument naming the parameter when pointer is NULL.
template <typename T>
T& required(T* pointer, const char* name) {
  if (pointer == nullptr) invalid(std::string(name) + " is NULL");
  return *pointer;
}

// Runs make with *out cleared first, so a failed creation leaves NULL there.
template <typename T, typename F>
dermal_status create(T** out, const char* name, F&& make) noexcept {
  if (out != nullptr) *out = nullptr;
  return guarded([&] { required(out, name) = make(); });
}

void check_index(std::size_t index, std::size_t count, const char* what) {
  if (index >= count)
    invalid("index " + std::to_string(index) + " is out of range: there are " + std::to_string(count) + " " + what);
}

const dermal::Explanation& explanation(const dermal_result* result, std::size_t i) {
  const auto& explanations = required(result, "result").prediction.explanations;
  check_index(i, explanations.size(), "explanations");
  return explanations[i];
}

void give_heatmap(const dermal::Heatmap& map, int* width, int* height, const float** values) {
  required(width, "width") = map.width;
  required(height, "height") = map.height;
  required(values, "values") = map.values.empty() ? nullptr : map.values.data();
}

const dermal::PredictOptions& predict_options_or_default(const dermal_predict_options* options) {
  static const dermal::PredictOptions defaults;
  return options == nullptr ? defaults : options->options;
}

}  // namespace

extern "C" {

int dermal_abi_version(void) { return DERMAL_ABI_VERSION; }

const char* dermal_version_string(void) { return DERMAL_VERSION_STRING; }

const char* dermal_status_name(dermal_status status) {
  if (status < DERMAL_OK || status > DERMAL_NUMERICS_MISMATCH) return "unknown";
  return dermal::error_code_name(static_cast<ErrorCode>(status));
}

const char* dermal_last_error(void) { return last_error; }

dermal_status dermal_memory_status(uint64_t* current_rss_bytes, uint64_t* peak_rss_bytes) {
  return guarded([&] {
    uint64_t& current = required(current_rss_bytes, "current_rss_bytes");
    uint64_t& peak = required(peak_rss_bytes, "peak_rss_bytes");
    const dermal::MemoryStatus status = dermal::memory_status();
    current = status.current_rss_bytes;
    peak = status.peak_rss_bytes;
  });
}

// ---- Load options

dermal_status dermal_load_options_create(dermal_load_options** options) {
  return create(options, "options", [] { return new dermal_load_options(); });
}

void dermal_load_options_free(dermal_load_options* options) { delete options; }

dermal_status dermal_load_options_set_threads(dermal_load_options* options, int threads) {
  return guarded([&] { required(options, "options").options.threads = threads; });
}

dermal_status dermal_load_options_set_preload(dermal_load_options* options, int preload) {
  return guarded([&] { required(options, "options").options.preload = preload != 0; });
}

dermal_status dermal_load_options_set_explain(dermal_load_options* options, int explain) {
  return guarded([&] { required(options, "options").options.explain = explain != 0; });
}

dermal_status dermal_load_options_set_optimise(dermal_load_options* options, int optimise) {
  return guarded([&] { required(options, "options").options.optimise = optimise != 0; });
}

dermal_status dermal_load_options_set_cam_layer(dermal_load_options* options, const char* layer) {
  return guarded([&] { required(options, "options").options.cam_layer = layer == nullptr ? "" : layer; });
}

dermal_status dermal_load_options_set_max_pixels(dermal_load_options* options, uint64_t max_pixels) {
  return guarded([&] { required(options, "options").options.decode.max_pixels = max_pixels; });
}

dermal_status dermal_load_options_set_max_concurrent(dermal_load_options* options, int max_concurrent) {
  return guarded([&] { required(options, "options").options.max_concurrent = max_concurrent; });
}

dermal_status dermal_load_options_set_queue_timeout_ms(dermal_load_options* options, int queue_timeout_ms) {
  return guarded([&] { required(options, "options").options.queue_timeout_ms = queue_timeout_ms; });
}

dermal_status dermal_load_options_set_tune_allocator(dermal_load_options* options, int tune_allocator) {
  return guarded([&] { required(options, "options").options.tune_allocator = tune_allocator != 0; });
}

dermal_status dermal_load_options_set_release_memory_after_predict(dermal_load_options* options,
                                                                   int release_memory_after_predict) {
  return guarded([&] {
    required(options, "options").options.release_memory_after_predict = release_memory_after_predict != 0;
  });
}

// ---- Predict options

dermal_status dermal_predict_options_create(dermal_predict_options** options) {
  return create(options, "options", [] { return new dermal_predict_options(); });
}

void dermal_predict_options_free(dermal_predict_options* options) { delete options; }

dermal_status dermal_predict_options_set_top_k(dermal_predict_options* options, int top_k) {
  return guarded([&] { required(options, "options").options.top_k = top_k; });
}

dermal_status dermal_predict_options_set_explain(dermal_predict_options* options, int explain) {
  return guarded([&] { required(options, "options").options.explain = explain != 0; });
}

dermal_status dermal_predict_options_set_cam_method(dermal_predict_options* options, const char* method) {
  return guarded([&] {
    dermal_predict_options& o = required(options, "options");
    required(method, "method");
    o.options.cam_method = dermal::parse_cam_method(method);
  });
}

dermal_status dermal_predict_options_set_cam_class(dermal_predict_options* options, const char* label) {
  return guarded([&] {
    dermal_predict_options& o = required(options, "options");
    if (label == nullptr) o.options.cam_class.reset();
    else o.options.cam_class = label;
  });
}

dermal_status dermal_predict_options_set_cam_top_k(dermal_predict_options* options, int cam_top_k) {
  return guarded([&] { required(options, "options").options.cam_top_k = cam_top_k; });
}

dermal_status dermal_predict_options_set_colormap(dermal_predict_options* options, const char* colormap) {
  return guarded([&] {
    dermal_predict_options& o = required(options, "options");
    required(colormap, "colormap");
    o.options.colormap = dermal::parse_colormap(colormap);
  });
}

dermal_status dermal_predict_options_set_overlay_format(dermal_predict_options* options, const char* format) {
  return guarded([&] {
    dermal_predict_options& o = required(options, "options");
    required(format, "format");
    o.options.overlay_format = dermal::parse_image_format(format);
  });
}

dermal_status dermal_predict_options_set_overlay_alpha(dermal_predict_options* options, float alpha) {
  return guarded([&] { required(options, "options").options.overlay_alpha = alpha; });
}

dermal_status dermal_predict_options_set_jpeg_quality(dermal_predict_options* options, int quality) {
  return guarded([&] { required(options, "options").options.jpeg_quality = quality; });
}

dermal_status dermal_predict_options_set_overlay(dermal_predict_options* options, int overlay) {
  return guarded([&] { required(options, "options").options.overlay = overlay != 0; });
}

dermal_status dermal_predict_options_set_full_heatmap(dermal_predict_options* options, int full_heatmap) {
  return guarded([&] { required(options, "options").options.full_heatmap = full_heatmap != 0; });
}

dermal_status dermal_predict_options_set_faithfulness(dermal_predict_options* options, int faithfulness) {
  return guarded([&] { required(options, "options").options.faithfulness = faithfulness != 0; });
}

dermal_status dermal_predict_options_set_eigen_smooth(dermal_predict_options* options, int eigen_smooth) {
  return guarded([&] { required(options, "options").options.eigen_smooth = eigen_smooth != 0; });
}

dermal_status dermal_predict_options_set_aug_smooth(dermal_predict_options* options, int aug_smooth) {
  return guarded([&] { required(options, "options").options.aug_smooth = aug_smooth != 0; });
}

// ---- Model

dermal_status dermal_model_open(const char* path, const dermal_load_options* options, dermal_model** model) {
  return create(model, "model", [&] {
    required(path, "path");
    return new dermal_model{dermal::Model(path, options == nullptr ? dermal::LoadOptions() : options->options)};
  });
}

void dermal_model_free(dermal_model* model) { delete model; }

dermal_status dermal_model_predict(dermal_model* model, const uint8_t* bytes, size_t size,
                                   const dermal_predict_options* options, dermal_result** result) {
  return create(result, "result", [&] {
    dermal::Prediction prediction =
        required(model, "model").model.predict(bytes, size, predict_options_or_default(options));
    return new dermal_result{std::move(prediction)};
  });
}

dermal_status dermal_model_predict_rgb(dermal_model* model, const uint8_t* rgb, int width, int height,
                                       size_t row_stride, const dermal_predict_options* options,
                                       dermal_result** result) {
  return create(result, "result", [&] {
    dermal_model& m = required(model, "model");
    required(rgb, "rgb");
    if (width < 1 || height < 1)
      invalid("an RGB picture needs a positive size, not " + std::to_string(width) + "x" + std::to_string(height));
    const std::size_t row_bytes = static_cast<std::size_t>(width) * 3;
    if (row_stride < row_bytes)
      invalid("row_stride " + std::to_string(row_stride) + " is below width * 3 = " + std::to_string(row_bytes));
    dermal::Image image;
    image.width = width;
    image.height = height;
    image.rgb.resize(row_bytes * height);
    for (int y = 0; y < height; ++y)
      std::copy(rgb + y * row_stride, rgb + y * row_stride + row_bytes, image.rgb.begin() + y * row_bytes);
    dermal::Prediction prediction = m.model.predict(image, predict_options_or_default(options));
    return new dermal_result{std::move(prediction)};
  });
}

dermal_status dermal_model_load(dermal_model* model) {
  return guarded([&] { required(model, "model").model.load(); });
}

dermal_status dermal_model_unload(dermal_model* model) {
  return guarded([&] { required(model, "model").model.unload(); });
}

dermal_status dermal_model_is_loaded(const dermal_model* model, int* loaded) {
  return guarded([&] {
    const dermal_model& m = required(model, "model");
    required(loaded, "loaded") = m.model.loaded() ? 1 : 0;
  });
}

dermal_status dermal_model_weight_bytes(const dermal_model* model, uint64_t* bytes) {
  return guarded([&] {
    const dermal_model& m = required(model, "model");
    required(bytes, "bytes") = m.model.weight_bytes();
  });
}

dermal_status dermal_model_probe_result(const dermal_model* model, const char** result) {
  return guarded([&] {
    const dermal_model& m = required(model, "model");
    required(result, "result") = dermal::probe_result_name(m.model.probe_result());
  });
}

dermal_status dermal_model_label_count(const dermal_model* model, size_t* count) {
  return guarded([&] {
    size_t& out = required(count, "count");
    out = required(model, "model").model.labels().size();
  });
}

dermal_status dermal_model_label(const dermal_model* model, size_t index, const char** label) {
  return guarded([&] {
    const char*& out = required(label, "label");
    const std::vector<std::string>& labels = required(model, "model").model.labels();
    check_index(index, labels.size(), "labels");
    out = labels[index].c_str();
  });
}

// ---- Result

void dermal_result_free(dermal_result* result) { delete result; }

dermal_status dermal_result_top_count(const dermal_result* result, size_t* count) {
  return guarded([&] {
    const dermal_result& r = required(result, "result");
    required(count, "count") = r.prediction.top.size();
  });
}

dermal_status dermal_result_top(const dermal_result* result, size_t rank, const char** label, int* index,
                                float* probability) {
  return guarded([&] {
    const auto& top = required(result, "result").prediction.top;
    const char*& label_out = required(label, "label");
    int& index_out = required(index, "index");
    float& probability_out = required(probability, "probability");
    check_index(rank, top.size(), "top classes");
    label_out = top[rank].label.c_str();
    index_out = top[rank].index;
    probability_out = top[rank].probability;
  });
}

dermal_status dermal_result_probabilities(const dermal_result* result, const float** values, size_t* count) {
  return guarded([&] {
    const auto& probabilities = required(result, "result").prediction.probabilities;
    required(values, "values") = probabilities.data();
    required(count, "count") = probabilities.size();
  });
}

dermal_status dermal_result_explanation_count(const dermal_result* result, size_t* count) {
  return guarded([&] {
    const dermal_result& r = required(result, "result");
    required(count, "count") = r.prediction.explanations.size();
  });
}

dermal_status dermal_result_explanation_class(const dermal_result* result, size_t i, const char** label, int* index) {
  return guarded([&] {
    const dermal::Explanation& e = explanation(result, i);
    required(label, "label") = e.label.c_str();
    required(index, "index") = e.class_index;
  });
}

dermal_status dermal_result_explanation_cam_method(const dermal_result* result, size_t i, const char** method) {
  return guarded([&] {
    const dermal::Explanation& e = explanation(result, i);
    required(method, "method") = dermal::cam_method_name(e.cam_method);
  });
}

dermal_status dermal_result_explanation_flat(const dermal_result* result, size_t i, int* flat) {
  return guarded([&] {
    const dermal::Explanation& e = explanation(result, i);
    required(flat, "flat") = e.flat ? 1 : 0;
  });
}

dermal_status dermal_result_explanation_heatmap(const dermal_result* result, size_t i, int* width, int* height,
                                                const float** values) {
  return guarded([&] { give_heatmap(explanation(result, i).heatmap, width, height, values); });
}

dermal_status dermal_result_explanation_full_heatmap(const dermal_result* result, size_t i, int* width, int* height,
                                                     const float** values) {
  return guarded([&] { give_heatmap(explanation(result, i).full_heatmap, width, height, values); });
}

dermal_status dermal_result_explanation_overlay(const dermal_result* result, size_t i, const uint8_t** bytes,
                                                size_t* size) {
  return guarded([&] {
    const dermal::Explanation& e = explanation(result, i);
    required(bytes, "bytes") = e.overlay.empty() ? nullptr : e.overlay.data();
    required(size, "size") = e.overlay.size();
  });
}

dermal_status dermal_result_explanation_faithfulness(const dermal_result* result, size_t i, int* present,
                                                     float* cam_mult_image_change, float* road) {
  return guarded([&] {
    const dermal::Explanation& e = explanation(result, i);
    int& is_present = required(present, "present");
    float& change = required(cam_mult_image_change, "cam_mult_image_change");
    float* figures = &required(road, "road");
    is_present = e.faithfulness ? 1 : 0;
    if (!e.faithfulness) return;
    change = e.faithfulness->cam_mult_image_change;
    std::copy(std::begin(e.faithfulness->road), std::end(e.faithfulness->road), figures);
  });
}

}  // extern "C"
