// dermal: classify a skin-lesion photo with a TorchScript model and explain
// the score with a class activation map, in-process and in little memory.
//
//   dermal::Model model("demo.pt");                       // loads now
//   dermal::Prediction p = model.predict(jpeg_bytes, {});  // top-3 + Grad-CAM overlay
//   p.top[0].label, p.top[0].probability, p.explanations[0].overlay
//
// The scores are a model's output, not a diagnosis.
//
// Threads: a Model owns its inference threads (LoadOptions::max_concurrent,
// started at the first prediction). predict() may be called from any number
// of threads: it hands the request to one of the model's threads and waits.
// fork(): a model loaded before fork() serves in the children (a pre-forking
// server's workers share its weights copy-on-write). fork() waits until no
// request or load is running, and each child starts its own inference
// threads; a model not yet loaded loads in each child on its own.
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
  unknown_class = 9,       // a class label the model does not have
  out_of_memory = 10,
  internal = 11,           // an unexpected failure inside LibTorch or dermal
  explain_disabled = 12,   // a heatmap was asked of a model loaded with explain off
  busy = 13,               // no inference thread took the request within the queue timeout
  numerics_mismatch = 14,  // neither the optimised nor the frozen graphs compute the file's probe as its exporter did
};

// The code's name, e.g. "invalid_image"; "unknown" for a number outside the enum.
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
  // Pictures with more pixels than this are refused; encoded ones before any
  // pixel is decoded (from the size their header declares).
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
  // precision.reduced "bfloat16": the stages before the CAM layer compute in
  // bfloat16 (python3 -m dermal.convert torchvision --precision bf16). Loaded only on a CPU
  // with native bfloat16 arithmetic; elsewhere it would run slower than float32.
  bool bfloat16 = false;
};

// Parses and validates a description; throws Error(invalid_model) naming the field.
ModelDescription parse_description(const std::string& json);

enum class CamMethod {
  gradcam, gradcam_plus_plus, xgradcam, hirescam, layercam, eigencam,
  gradcam_elementwise, eigengradcam, finercam, fem, kpcacam,  // docs/cam-methods.md
  ablationcam, scorecam,
};
enum class Colormap { jet, viridis };
enum class ImageFormat { jpeg, png };

// Names as the three APIs spell them: "gradcam", "gradcam++", "xgradcam",
// "hirescam", "layercam", "eigencam", "gradcamelementwise", "eigengradcam",
// "finercam", "fem", "kpcacam", "ablationcam", "scorecam"; "jet", "viridis";
// "jpeg", "png".
// parse_* throw Error(invalid_argument) listing the accepted names.
CamMethod parse_cam_method(const std::string& name);
const char* cam_method_name(CamMethod method);
Colormap parse_colormap(const std::string& name);
const char* colormap_name(Colormap colormap);
ImageFormat parse_image_format(const std::string& name);
const char* image_format_name(ImageFormat format);

struct LoadOptions {
  bool preload = true;        // false: the first predict() loads the model
  int threads = 1;            // LibTorch intra-op threads of each inference thread; the host's own stay as they are
  std::string cam_layer;      // empty: the description's cam_layer
  bool explain = true;        // false: no heatmaps ever (every stage optimised, less memory)
  // false: the graphs are frozen but not optimised for inference (LibTorch's
  // optimize_for_inference, oneDNN's rewrite); slower on most machines
  // (reference model, 1 thread: 105 -> 989 ms on Debian 12, whose frozen
  // 1x1 convolutions go to the reference BLAS; benchmarks/results/
  // releases.md), for comparison or where that rewrite misbehaves in a way
  // the load's checks miss. Where they catch it (the file's probe, or
  // oneDNN's tensor ops crashing in a child process), the frozen graphs are
  // served anyway and probe_result() says frozen_fallback. That child is
  // forked once per process, at the first load that optimises, and reaped by
  // the load (the host sees one SIGCHLD); false forks nothing.
  bool optimise = true;
  DecodeOptions decode;       // limits applied to every photo
  // The model's own inference threads: at most this many predictions run at
  // once, and per-thread scratch memory exists only on them, so the peak is
  // about idle + max_concurrent x one request whatever the host's threads.
  int max_concurrent = 1;
  // A request that no inference thread has taken within this time fails with
  // ErrorCode::busy.
  int queue_timeout_ms = 30000;
  // Process-wide, opt-in: sets glibc's M_MMAP_THRESHOLD to 128 KiB while
  // loading (freed copies of weights go back to the system at once: reference
  // model load peak 337 -> 320 MB) and M_MMAP_THRESHOLD and M_TRIM_THRESHOLD
  // to 32 MiB afterwards (the ceiling of glibc's adaptive threshold; fixing one
  // threshold alone costs ~24,000 page faults, ~20 ms, per request). With
  // glibc's own thresholds, reference-model Grad-CAM took 2.6-3.4x as long,
  // with ~9x the page faults, on the README's VM (slow page faults).
  // Without glibc it does nothing.
  bool tune_allocator = false;
  // Process-wide: after each prediction, the heap memory freed in the whole
  // process goes back to the system (glibc's malloc_trim(0)), so the resident
  // set falls back to its settled size between requests (reference model:
  // ~14 MB less). The next request maps those pages again: where page faults
  // are slow (~14 us on the VM of the README's figures) false made Grad-CAM
  // ~20 % faster, for that much more resident memory. Without glibc it does nothing.
  bool release_memory_after_predict = true;
};

struct PredictOptions {
  int top_k = 3;                         // classes listed, best first (capped at the label count)
  std::optional<bool> explain;           // heatmaps; unset: as LoadOptions::explain
  CamMethod cam_method = CamMethod::gradcam;
  std::optional<std::string> cam_class;  // a label: explain this class only
  int cam_top_k = 1;                     // else: explain each of the top cam_top_k
  bool overlay = true;                   // the encoded photo + heatmap
  bool full_heatmap = false;             // the map at the photo's size (4 bytes per photo pixel)
  Colormap colormap = Colormap::jet;
  ImageFormat overlay_format = ImageFormat::jpeg;
  float overlay_alpha = 0.45f;           // heatmap weight in the blend, 0..1
  int jpeg_quality = 90;                 // 1..100
  // Each explanation whose map is not flat also gets its Faithfulness: five
  // more forwards of the whole network (one at a time) and four sparse solves
  // at the input size per explanation (docs/cam-methods.md).
  bool faithfulness = false;
  // The map is the first principal component of the per-channel terms it
  // sums (pytorch-grad-cam's eigen_smooth); no effect on eigencam,
  // eigengradcam, kpcacam and fem, as there (docs/cam-methods.md).
  bool eigen_smooth = false;
  // The map is the mean of the method's maps for six copies of the input
  // (flipped or not x multiplied by 0.9, 1 or 1.1), each flipped back:
  // pytorch-grad-cam's aug_smooth. Six passes: up to six times a request's time
  // (docs/cam-methods.md).
  bool aug_smooth = false;
};

// Throws Error(invalid_argument) naming the first option out of range.
void check_options(const LoadOptions& options);
void check_options(const PredictOptions& options);

struct ClassScore {
  int index = 0;
  std::string label;
  float probability = 0.0f;
};

// A class activation map with values in [0, 1] (0 and 1 both present unless flat).
struct Heatmap {
  int width = 0;
  int height = 0;
  std::vector<float> values;  // row-major, width * height
};

// The removed shares of ROAD's figures, in percent of the input's pixels.
constexpr int kRoadPercents[4] = {10, 20, 50, 80};

// How the explained class's probability p moves when the photo is changed
// where the map points (docs/cam-methods.md): scores about a map, not a diagnosis.
struct Faithfulness {
  // p(input x map) - p(input): pytorch-grad-cam's CAM-mult-image confidence change.
  float cam_mult_image_change = 0.0f;
  // ROAD, most relevant first: p(input with the kRoadPercents[i] % most
  // important pixels removed and imputed from their neighbours) - p(input).
  float road[4] = {0, 0, 0, 0};
};

struct Explanation {
  int class_index = 0;
  std::string label;
  CamMethod cam_method = CamMethod::gradcam;
  Heatmap heatmap;       // at the CAM layer's resolution
  Heatmap full_heatmap;  // at the photo's size, zero outside the part the model saw; empty unless asked
  bool flat = false;     // the map had no contrast (or was not finite): all zeros
  std::vector<std::uint8_t> overlay;  // encoded photo + heatmap, if asked
  std::optional<Faithfulness> faithfulness;  // if asked and the map is not flat
};

struct Prediction {
  std::vector<ClassScore> top;             // best first, at most top_k
  std::vector<float> probabilities;        // one per label, in label order
  std::vector<Explanation> explanations;   // empty without explain
};

struct MemoryStatus {
  std::uint64_t current_rss_bytes = 0;  // VmRSS
  std::uint64_t peak_rss_bytes = 0;     // VmHWM
};

// The process's resident set, as a web app's memory endpoint shows it.
MemoryStatus memory_status();

// What loading found when it ran the model file's probe (an image and what
// the exporting framework computed for it, oneDNN off) through the graphs.
enum class ProbeResult {
  none = 0,             // not loaded, or a file without a probe (older exports): not checked
  passed = 1,           // the graphs (optimised where dermal optimises) agree with the probe
  frozen_fallback = 2,  // the optimised graphs disagreed with the probe, or oneDNN's tensor ops crashed in the
                        // load's check (files without a probe too): the frozen graphs are served (slower)
};
// "none", "passed", "frozen_fallback".
const char* probe_result_name(ProbeResult result);

class Model {
 public:
  // Opens (and with preload, loads) a dermal model file; throws Error.
  explicit Model(std::string path, LoadOptions options = {});
  // Waits for predictions in flight, then stops the inference threads.
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Classifies an encoded photo (JPEG, PNG, BMP). After each prediction the
  // freed intermediates are handed back to the system, unless
  // LoadOptions::release_memory_after_predict is false.
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

  // The class labels in the order of Prediction::probabilities; loads the
  // model if it has never been loaded. The reference stays valid, and the
  // labels unchanged, for the Model's lifetime (unload() included).
  const std::vector<std::string>& labels();
  // A copy of the description; loads the model if it is not loaded.
  ModelDescription description();
  // The CAM layer in use (the description's or the one chosen at load).
  std::string cam_layer() const;
  // Bytes of the loaded weights and buffers; 0 when unloaded.
  std::uint64_t weight_bytes() const;
  const std::string& path() const;
  // What the load's probe found; ProbeResult::none when unloaded.
  ProbeResult probe_result() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Colours a heatmap (values in [0, 1], quantised to 256 levels) and blends
// it over the photo: out = (1 - alpha) * photo + alpha * colour, rounded.
// Sizes must match.
Image render_overlay(const Image& photo, const Heatmap& heatmap, Colormap colormap, float alpha);

// Encodes RGB to JPEG (quality 1..100) or PNG.
std::vector<std::uint8_t> encode_image(const Image& image, ImageFormat format, int jpeg_quality = 90);

}  // namespace dermal
