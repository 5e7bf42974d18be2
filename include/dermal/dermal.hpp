// dermal: classify a skin-lesion photo with a TorchScript model and explain
// the score with a class activation map, in-process and in little memory.
//
//   dermal::Model model("demo.pt");                       // loads now
//   dermal::Prediction p = model.predict(jpeg_bytes, {});  // top-3 + Grad-CAM
//   p.top[0].label, p.top[0].probability, p.cams[0].overlay
//
// The scores are a model's output, not a diagnosis.
//
// Thread safety: a Model may be shared by many threads; predict() and the
// getters may run concurrently, load()/unload() are serialised internally.
// Every failure is reported by throwing dermal::Error with a code and a
// message that names what was wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace dermal {

// Numbers are stable (they are the C ABI's status codes); new ones go last.
enum class ErrorCode : int {
  ok = 0,
  invalid_argument = 1,    // a wrong argument or option value
  io = 2,                  // a file could not be read or written
  invalid_image = 3,       // empty, truncated or corrupt image data
  unsupported_image = 4,   // a format or pixel layout dermal does not decode
  image_too_large = 5,     // declared dimensions over the pixel limit
  invalid_model = 6,       // not a dermal model, or its description is wrong
  model_not_loaded = 7,    // used after unload / close
  unknown_layer = 8,       // a CAM layer that is not a stage with spatial output
  unknown_class = 9,       // a class label or index the model does not have
  out_of_memory = 10,
  internal = 11,           // an unexpected failure inside LibTorch or dermal
  gradcam_disabled = 12,   // a heatmap was asked of a model loaded without it
  busy = 13,               // no inference slot became free within the timeout
};

// The code's name, e.g. "invalid_image".
const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// An 8-bit RGB picture, rows top to bottom, upright (EXIF orientation applied).
struct Image {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> rgb;  // width * height * 3 bytes
};

struct DecodeOptions {
  // Images whose header declares more pixels than this are refused before
  // any pixel is decoded.
  std::uint64_t max_pixels = 40'000'000;
};

// Decodes JPEG, PNG or BMP bytes to upright RGB.
Image decode_image(const std::uint8_t* data, std::size_t size, const DecodeOptions& options = {});

// stretch: the photo resized to the input size; center_crop: its shorter
// side resized to resize_shorter_to, then the centre cut out (torchvision's
// Resize + CenterCrop); fit: PIL.ImageOps.fit, the largest centred box of the
// input's aspect ratio resized to the input size (needs a resample filter).
enum class ResizePolicy { stretch, center_crop, fit };
// PIL's Image.resize filters, computed byte for byte as Pillow does.
enum class ResampleFilter { nearest, bilinear, bicubic, lanczos, box, hamming };
enum class OutputActivation { softmax, sigmoid };

// What a model file says about itself (its dermal.json).
struct ModelDescription {
  std::string name;
  std::vector<std::string> labels;
  int input_width = 0;
  int input_height = 0;
  ResizePolicy resize = ResizePolicy::stretch;
  int resize_shorter_to = 0;  // center_crop only: shorter side before cropping
  // Set: the photo is resized as PIL's Image.resize with this filter (8-bit
  // result). Unset: an antialiased float bilinear, as torchvision on tensors.
  std::optional<ResampleFilter> resample;
  float scale = 1.0f / 255.0f;
  float mean[3] = {0, 0, 0};
  float std[3] = {1, 1, 1};
  OutputActivation output = OutputActivation::softmax;
  std::vector<std::string> stages;  // dotted submodule paths, run in order
  std::string cam_layer;            // the stage whose output Grad-CAM explains
  std::vector<std::string> frozen_only;  // stages not to optimise for inference (optional)
};

// Parses and validates a description; throws Error(invalid_model) naming the field.
ModelDescription parse_description(const std::string& json);

enum class CamMethod { gradcam, gradcam_plus_plus, xgradcam, hirescam, layercam, eigencam };
enum class Colormap { jet, viridis };
enum class ImageFormat { jpeg, png };

// Parses "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam".
CamMethod parse_cam_method(const std::string& name);
const char* cam_method_name(CamMethod method);
Colormap parse_colormap(const std::string& name);  // "jet", "viridis"

struct LoadOptions {
  bool preload = true;        // false: the first predict() loads the model
  int threads = 1;            // intra-op threads (LibTorch's setting is per process)
  std::string cam_layer;      // empty: the description's cam_layer
  bool gradcam = true;        // false: predict() never computes heatmaps
  DecodeOptions decode;       // limits applied to images given as bytes
  // At most this many predictions run at once (0: no limit); the others wait
  // up to queue_timeout_ms for a slot, then fail with ErrorCode::busy.
  int max_concurrent = 0;
  int queue_timeout_ms = 30000;
};

struct PredictOptions {
  int top_k = 3;
  std::optional<bool> gradcam;           // unset: on when the model allows it
  CamMethod cam = CamMethod::gradcam;
  std::optional<std::string> cam_class;  // a label: explain this class only
  int cam_top_k = 1;                     // else: explain each of the top cam_top_k
  bool render_overlay = true;            // also produce the encoded overlay
  bool full_heatmap = true;              // also produce Explanation::full (4 bytes per photo pixel)
  Colormap colormap = Colormap::jet;
  ImageFormat overlay_format = ImageFormat::jpeg;
  float overlay_alpha = 0.45f;           // heatmap weight in the blend, 0..1
  int jpeg_quality = 90;
};

struct ClassScore {
  int index = 0;
  std::string label;
  float probability = 0.0f;
};

// A class activation map with values in [0, 1].
struct Heatmap {
  int width = 0;
  int height = 0;
  std::vector<float> values;  // row-major, width * height
};

struct Explanation {
  int class_index = 0;
  std::string label;
  CamMethod method = CamMethod::gradcam;
  Heatmap raw;    // at the CAM layer's resolution
  Heatmap full;   // bilinear to the photo's size; empty if PredictOptions::full_heatmap is false
  bool flat = false;  // the map had no contrast (or was not finite): all zeros
  std::vector<std::uint8_t> overlay;  // encoded photo + heatmap, if rendered
};

struct Prediction {
  std::vector<ClassScore> top;        // best first, at most top_k
  std::vector<float> probabilities;   // one per label, in label order
  std::vector<Explanation> cams;      // empty without Grad-CAM
};

struct MemoryStatus {
  std::uint64_t current_rss_bytes = 0;  // VmRSS
  std::uint64_t peak_rss_bytes = 0;     // VmHWM
};

// The process's resident set, as a web app's memory endpoint shows it.
MemoryStatus memory_status();

class Model {
 public:
  // Opens (and with preload, loads) a dermal model file; throws Error.
  // Loading sets glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD for the
  // process (128 KiB while loading, then 32 MiB); see the README.
  explicit Model(std::string path, LoadOptions options = {});
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Classifies an encoded photo (JPEG, PNG, BMP).
  Prediction predict(const std::uint8_t* data, std::size_t size, const PredictOptions& options = {});
  // Classifies an upright RGB picture.
  Prediction predict(const Image& image, const PredictOptions& options = {});

  // Loads now if not loaded; a no-op otherwise. Safe under concurrent calls.
  void load();
  // Frees the network and its weights; a later predict() loads again.
  void unload();
  bool loaded() const;
  // How many times the network has been read from the file (lazy loading
  // under concurrent first calls reads it once).
  int load_count() const;

  // A copy of the description; loads the model if it is not loaded.
  ModelDescription description();
  // The CAM layer in use (the description's or the one chosen at load).
  std::string cam_layer() const;
  // Bytes of the loaded weights and buffers; 0 when unloaded.
  std::uint64_t weight_bytes() const;
  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Prediction predict_upright(const Image& image, const PredictOptions& options);
};

// Colours a heatmap (values in [0, 1], quantised to 256 levels) and blends
// it over the photo: out = (1 - alpha) * photo + alpha * colour, rounded.
// Sizes must match.
Image render_overlay(const Image& photo, const Heatmap& heatmap, Colormap colormap, float alpha);

// Encodes RGB to JPEG (quality 1..100) or PNG.
std::vector<std::uint8_t> encode_image(const Image& image, ImageFormat format, int jpeg_quality = 90);

}  // namespace dermal
