// Where the model runs: loading a dermal model file, splitting it at the CAM
// layer, prediction, and the single backward pass that Grad-CAM needs.
#include <fmt/format.h>
#include <malloc.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <new>
#include <numeric>

#include "dermal/dermal.hpp"
#include "heatmap/cam.hpp"
#include "heatmap/render.hpp"
#include "image/preprocess.hpp"

namespace dermal {

namespace {

constexpr const char* kDescriptionFile = "dermal.json";

// The informative line of a LibTorch message: a TorchScript error's final
// "RuntimeError: ..." line, else the first line (the rest is a stack trace).
std::string torch_message(const std::exception& error) {
  const std::string text = error.what();
  const std::string marker = "RuntimeError: ";
  const std::size_t at = text.rfind(marker);
  const std::size_t start = at == std::string::npos ? 0 : at + marker.size();
  return text.substr(start, text.find('\n', start) - start);
}

// Runs f, turning LibTorch and allocation failures into dermal::Error.
template <typename F>
auto translate_failures(const char* doing, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::out_of_memory, fmt::format("out of memory while {}", doing));
  } catch (const std::exception& e) {
    throw Error(ErrorCode::internal, fmt::format("LibTorch failed while {}: {}", doing, torch_message(e)));
  }
}

// The network, split at the CAM layer. Stages up to and including the CAM
// layer are frozen and optimised for inference (no autograd through them);
// the stages after it are frozen only, so a gradient can flow back to the
// CAM layer's output. Each stage holds the only copy of its weights.
struct Network {
  ModelDescription description;
  std::vector<torch::jit::Module> before;  // ends with the CAM layer
  std::vector<torch::jit::Module> after;
  std::string cam_layer;
  std::uint64_t weight_bytes = 0;
};

torch::Tensor run_stages(std::vector<torch::jit::Module>& stages, torch::Tensor x) {
  for (torch::jit::Module& stage : stages) x = stage.forward({x}).toTensor();
  return x;
}

torch::jit::Module submodule(const torch::jit::Module& root, const std::string& dotted_path) {
  torch::jit::Module module = root;
  std::size_t start = 0;
  while (start <= dotted_path.size()) {
    const std::size_t dot = std::min(dotted_path.find('.', start), dotted_path.size());
    const std::string name = dotted_path.substr(start, dot - start);
    if (!module.hasattr(name) || !module.attr(name).isModule())
      throw Error(ErrorCode::invalid_model,
                  fmt::format("stage \"{}\" named in dermal.json is not a submodule of the network", dotted_path));
    module = module.attr(name).toModule();
    start = dot + 1;
  }
  if (!module.find_method("forward"))
    throw Error(ErrorCode::invalid_model, fmt::format("stage \"{}\" has no forward method", dotted_path));
  return module;
}

// Indices of `stages`, the stage holding the most tensor bytes first.
std::vector<std::size_t> largest_first(const torch::jit::Module& root, const std::vector<std::string>& stages) {
  std::vector<std::uint64_t> bytes;
  for (const std::string& name : stages) {
    std::uint64_t total = 0;
    for (const auto& attribute : submodule(root, name).named_attributes(/*recurse=*/true))
      if (attribute.value.isTensor()) total += attribute.value.toTensor().nbytes();
    bytes.push_back(total);
  }
  std::vector<std::size_t> order(stages.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return bytes[a] > bytes[b]; });
  return order;
}

// Drops a module's own references to its tensors (recursively). A frozen
// copy keeps the tensors it still uses; the rest (e.g. weights folded into
// new ones) are freed now rather than when the whole network is dropped.
void release_tensors(const torch::jit::Module& module) {
  for (torch::jit::Module part : module.modules())
    for (const auto& attribute : part.named_attributes(/*recurse=*/false))
      if (attribute.value.isTensor()) part.setattr(attribute.name, torch::empty({0}));
}

std::string joined(const std::vector<std::string>& names) {
  return fmt::format("{}", fmt::join(names, ", "));
}

void check_readable_zip(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error(ErrorCode::io, fmt::format("cannot open model file \"{}\"", path));
  char magic[4] = {};
  file.read(magic, 4);
  if (file.gcount() != 4 || std::string(magic, 4) != std::string("PK\x03\x04", 4))
    throw Error(ErrorCode::invalid_model,
                fmt::format("\"{}\" is not a TorchScript model archive (not a zip file)", path));
}

std::shared_ptr<Network> load_network(const std::string& path, const LoadOptions& options) {
  check_readable_zip(path);
  auto network = std::make_shared<Network>();
  torch::jit::ExtraFilesMap extra{{kDescriptionFile, ""}};
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU, extra);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::invalid_model,
                fmt::format("\"{}\" is not a loadable TorchScript model: {}", path, torch_message(e)));
  }
  if (extra[kDescriptionFile].empty())
    throw Error(ErrorCode::invalid_model,
                fmt::format("\"{}\" has no {} description; export it with tools/export_model.py", path,
                            kDescriptionFile));
  network->description = parse_description(extra[kDescriptionFile]);
  const ModelDescription& d = network->description;

  network->cam_layer = options.cam_layer.empty() ? d.cam_layer : options.cam_layer;
  const std::size_t split = std::find(d.stages.begin(), d.stages.end(), network->cam_layer) - d.stages.begin();
  if (split == d.stages.size())
    throw Error(ErrorCode::unknown_layer, fmt::format("CAM layer \"{}\" is not one of the model's stages: {}",
                                                      network->cam_layer, joined(d.stages)));
  if (split + 1 == d.stages.size())
    throw Error(ErrorCode::unknown_layer,
                fmt::format("CAM layer \"{}\" is the last stage: its output has no spatial map", network->cam_layer));

  module.eval();
  for (const auto& parameter : module.parameters()) {
    parameter.set_requires_grad(false);
    network->weight_bytes += parameter.numel() * parameter.element_size();
  }
  for (const auto& buffer : module.buffers()) network->weight_bytes += buffer.numel() * buffer.element_size();

  // Without Grad-CAM every stage is optimised; with it, those after the CAM
  // layer stay differentiable. Stages the exporter found LibTorch's oneDNN
  // rewrite to get wrong ("frozen_only") are never optimised.
  const std::size_t optimised_count = options.gradcam ? split + 1 : d.stages.size();
  std::vector<torch::jit::Module> prepared(d.stages.size());
  for (const std::size_t i : largest_first(module, d.stages)) {
    // Freezing folds batch norms into new weights; the originals are released
    // before optimising makes the next copy, so at most two copies of one
    // stage's weights exist at a time, and the largest stage goes first,
    // before the others' optimised forms take memory of their own.
    const torch::jit::Module stage = submodule(module, d.stages[i]);
    torch::jit::Module frozen = torch::jit::freeze(stage);
    release_tensors(stage);
    malloc_trim(0);
    const bool optimisable =
        std::find(d.frozen_only.begin(), d.frozen_only.end(), d.stages[i]) == d.frozen_only.end();
    prepared[i] = i < optimised_count && optimisable ? torch::jit::optimize_for_inference(frozen) : frozen;
  }
  network->before.assign(prepared.begin(), prepared.begin() + optimised_count);
  network->after.assign(prepared.begin() + optimised_count, prepared.end());
  module = torch::jit::Module();

  // One forward of a blank image checks the description against the network.
  c10::InferenceMode inference;
  torch::Tensor x = torch::zeros({1, 3, d.input_height, d.input_width});
  torch::Tensor activation, logits;
  try {
    activation = run_stages(network->before, x);
    logits = run_stages(network->after, activation);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::invalid_model, fmt::format("the network rejects a 1x3x{}x{} input, as its description sets: {}",
                                                      d.input_height, d.input_width, torch_message(e)));
  }
  if (options.gradcam && (activation.dim() != 4 || activation.size(2) < 1 || activation.size(3) < 1))
    throw Error(ErrorCode::unknown_layer, fmt::format("CAM layer \"{}\" outputs shape {}, not a spatial NxCxHxW map",
                                                      network->cam_layer, fmt::join(activation.sizes(), "x")));
  if (logits.dim() != 2 || logits.size(0) != 1 || logits.size(1) != static_cast<std::int64_t>(d.labels.size()))
    throw Error(ErrorCode::invalid_model,
                fmt::format("the network outputs shape {} but the description lists {} labels",
                            fmt::join(logits.sizes(), "x"), d.labels.size()));
  return network;
}

torch::Tensor to_probabilities(const torch::Tensor& logits, OutputActivation activation) {
  return activation == OutputActivation::softmax ? torch::softmax(logits, 1) : torch::sigmoid(logits);
}

void check_options(const PredictOptions& options) {
  if (options.top_k < 1) throw Error(ErrorCode::invalid_argument, fmt::format("top_k must be at least 1, not {}", options.top_k));
  if (options.cam_top_k < 1)
    throw Error(ErrorCode::invalid_argument, fmt::format("cam_top_k must be at least 1, not {}", options.cam_top_k));
  if (!(options.overlay_alpha >= 0.0f && options.overlay_alpha <= 1.0f))
    throw Error(ErrorCode::invalid_argument,
                fmt::format("overlay_alpha must be within 0..1, not {}", options.overlay_alpha));
  if (options.jpeg_quality < 1 || options.jpeg_quality > 100)
    throw Error(ErrorCode::invalid_argument,
                fmt::format("jpeg_quality must be within 1..100, not {}", options.jpeg_quality));
}

// The part of the photo the model saw (all of it, or the centred crop), in
// the photo's pixels: where the heatmap lies on it.
Placement heatmap_placement(const Image& photo, const ModelDescription& description) {
  const ResizeWindow window = input_window(photo, description);
  const double to_photo_x = static_cast<double>(photo.width) / window.resized_width;
  const double to_photo_y = static_cast<double>(photo.height) / window.resized_height;
  Placement placement;
  placement.left = static_cast<int>(std::lround(window.left * to_photo_x));
  placement.top = static_cast<int>(std::lround(window.top * to_photo_y));
  placement.width = std::clamp(static_cast<int>(std::lround(window.width * to_photo_x)), 1, photo.width - placement.left);
  placement.height =
      std::clamp(static_cast<int>(std::lround(window.height * to_photo_y)), 1, photo.height - placement.top);
  return placement;
}

// Label indices, most probable first.
std::vector<int> ranked(const std::vector<float>& probabilities) {
  std::vector<int> order(probabilities.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return probabilities[a] > probabilities[b]; });
  return order;
}

std::vector<int> classes_to_explain(const PredictOptions& options, const std::vector<int>& ranking,
                                    const ModelDescription& description) {
  if (options.cam_class) {
    const auto& labels = description.labels;
    const auto it = std::find(labels.begin(), labels.end(), *options.cam_class);
    if (it == labels.end())
      throw Error(ErrorCode::unknown_class,
                  fmt::format("class \"{}\" is not one of the model's labels: {}", *options.cam_class, joined(labels)));
    return {static_cast<int>(it - labels.begin())};
  }
  return {ranking.begin(), ranking.begin() + std::min<std::size_t>(options.cam_top_k, ranking.size())};
}

// Bounds how many predictions run at once; a waiter gives up after a timeout.
class InferenceSlots {
 public:
  explicit InferenceSlots(int limit) : free_(limit), limited_(limit > 0) {}

  // Takes a slot, or throws Error(busy) after timeout_ms.
  void acquire(int timeout_ms) {
    if (!limited_) return;
    std::unique_lock<std::mutex> lock(mutex_);
    if (!freed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return free_ > 0; }))
      throw Error(ErrorCode::busy, fmt::format("no inference slot became free within {} ms", timeout_ms));
    --free_;
  }

  void release() {
    if (!limited_) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++free_;
    }
    freed_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable freed_;
  int free_;
  bool limited_;
};

// Holds one inference slot for its lifetime.
class SlotGuard {
 public:
  SlotGuard(InferenceSlots& slots, int timeout_ms) : slots_(slots) { slots_.acquire(timeout_ms); }
  ~SlotGuard() { slots_.release(); }
  SlotGuard(const SlotGuard&) = delete;
  SlotGuard& operator=(const SlotGuard&) = delete;

 private:
  InferenceSlots& slots_;
};

// While it lives, glibc returns every freed block of 128 KiB or more to the
// system at once (its adaptive mmap threshold would otherwise keep freed
// copies of weights resident during a load). Afterwards both thresholds are
// 32 MiB, the ceiling where the adaptive mmap threshold settles: activations
// come from the heap, and free() does not hand the top of the heap back in
// the middle of a request only for the next layer to fault it in again
// (about 20,000 page faults, 20 ms, per reference-model request). The
// malloc_trim after each request returns the memory instead.
class LoadingMallocThresholds {
 public:
  LoadingMallocThresholds() { set(128 * 1024); }
  ~LoadingMallocThresholds() { set(32 * 1024 * 1024); }
  LoadingMallocThresholds(const LoadingMallocThresholds&) = delete;
  LoadingMallocThresholds& operator=(const LoadingMallocThresholds&) = delete;

 private:
  static void set(int bytes) {
    mallopt(M_MMAP_THRESHOLD, bytes);
    mallopt(M_TRIM_THRESHOLD, bytes);
  }
};

}  // namespace

struct Model::Impl {
  std::string path;
  LoadOptions options;
  mutable std::mutex mutex;         // guards network; held while loading
  std::shared_ptr<Network> network; // in-flight predictions keep their own reference
  int load_count = 0;
  std::unique_ptr<InferenceSlots> slots;

  std::shared_ptr<Network> acquire() {
    std::lock_guard<std::mutex> lock(mutex);
    if (!network) {
      torch::set_num_threads(options.threads);
      {
        LoadingMallocThresholds threshold;
        network = translate_failures("loading the model", [&] { return load_network(path, options); });
      }
      ++load_count;
      malloc_trim(0);  // hand back what loading and optimising left on the heap
    }
    return network;
  }
};

Model::Model(std::string path, LoadOptions options) : impl_(std::make_unique<Impl>()) {
  if (options.threads < 1)
    throw Error(ErrorCode::invalid_argument, fmt::format("threads must be at least 1, not {}", options.threads));
  if (options.max_concurrent < 0 || options.queue_timeout_ms < 0)
    throw Error(ErrorCode::invalid_argument,
                fmt::format("max_concurrent ({}) and queue_timeout_ms ({}) must not be negative", options.max_concurrent,
                            options.queue_timeout_ms));
  impl_->slots = std::make_unique<InferenceSlots>(options.max_concurrent);
  impl_->path = std::move(path);
  impl_->options = std::move(options);
  if (impl_->options.preload) impl_->acquire();
}

Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

void Model::load() { impl_->acquire(); }

void Model::unload() {
  std::shared_ptr<Network> released;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    released.swap(impl_->network);
  }
  released.reset();  // frees the weights unless a prediction still runs on them
  malloc_trim(0);
}

bool Model::loaded() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->network != nullptr;
}

int Model::load_count() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->load_count;
}

ModelDescription Model::description() { return impl_->acquire()->description; }

std::string Model::cam_layer() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->network) return impl_->network->cam_layer;
  return impl_->options.cam_layer;
}

std::uint64_t Model::weight_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->network ? impl_->network->weight_bytes : 0;
}

const std::string& Model::path() const { return impl_->path; }

Prediction Model::predict(const std::uint8_t* data, std::size_t size, const PredictOptions& options) {
  check_options(options);
  SlotGuard slot(*impl_->slots, impl_->options.queue_timeout_ms);
  return predict_upright(decode_image(data, size, impl_->options.decode), options);
}

Prediction Model::predict(const Image& photo, const PredictOptions& options) {
  check_options(options);
  SlotGuard slot(*impl_->slots, impl_->options.queue_timeout_ms);
  return predict_upright(photo, options);
}

Prediction Model::predict_upright(const Image& photo, const PredictOptions& options) {
  const bool want_cam = options.gradcam.value_or(impl_->options.gradcam);
  if (want_cam && !impl_->options.gradcam)
    throw Error(ErrorCode::gradcam_disabled, "Grad-CAM was switched off when this model was loaded");
  std::shared_ptr<Network> network = impl_->acquire();
  const ModelDescription& d = network->description;
  std::vector<float> input = preprocess(photo, d);

  Prediction prediction = translate_failures("predicting", [&] {
    Prediction result;
    torch::Tensor x = torch::from_blob(input.data(), {1, 3, d.input_height, d.input_width});
    torch::Tensor activation, logits;
    const bool needs_gradient = want_cam && options.cam != CamMethod::eigencam;
    if (want_cam) {
      {
        // InferenceMode, not just NoGradGuard: LibTorch 2.6 (Debian 13) asserts
        // on some optimised (oneDNN) stages run with autograd's dispatch keys.
        c10::InferenceMode inference;
        activation = run_stages(network->before, x);
      }
      activation = activation.clone();  // an inference tensor cannot require grad; its copy can
      torch::AutoGradMode record(needs_gradient);  // only the stages after the CAM layer are recorded
      activation.requires_grad_(needs_gradient);
      logits = run_stages(network->after, activation);
    } else {
      c10::InferenceMode inference;
      logits = run_stages(network->after, run_stages(network->before, x));
    }
    const torch::Tensor probabilities = to_probabilities(logits.detach(), d.output).contiguous();
    const float* p = probabilities.data_ptr<float>();
    result.probabilities.assign(p, p + d.labels.size());
    for (float value : result.probabilities)
      if (!std::isfinite(value))
        throw Error(ErrorCode::invalid_model, "the network's output is not finite (NaN or Inf) for this image");
    const std::vector<int> order = ranked(result.probabilities);
    for (int i = 0; i < options.top_k && i < static_cast<int>(order.size()); ++i)
      result.top.push_back({order[i], d.labels[order[i]], result.probabilities[order[i]]});

    if (want_cam) {
      const std::vector<int> classes = classes_to_explain(options, order, d);
      const Placement placement = heatmap_placement(photo, d);
      for (std::size_t i = 0; i < classes.size(); ++i) {
        torch::Tensor gradient;
        if (needs_gradient) {
          const bool more_to_come = i + 1 < classes.size();
          gradient = torch::autograd::grad({logits[0][classes[i]]}, {activation}, {}, more_to_come)[0][0];
        }
        const NormalizedMap normalized = normalize_map(cam_map(options.cam, activation.detach()[0], gradient));
        Explanation explanation;
        explanation.class_index = classes[i];
        explanation.label = d.labels[classes[i]];
        explanation.method = options.cam;
        explanation.raw = normalized.map;
        explanation.flat = normalized.flat;
        if (options.full_heatmap) explanation.full = place_heatmap(explanation.raw, placement, photo.width, photo.height);
        if (options.render_overlay)
          explanation.overlay = encode_image(
              render_placed_overlay(photo, explanation.raw, placement, options.colormap, options.overlay_alpha),
              options.overlay_format, options.jpeg_quality);
        result.cams.push_back(std::move(explanation));
      }
    }
    // Drop the graph, activation and gradients before returning.
    logits.reset();
    activation.reset();
    return result;
  });
  input = std::vector<float>();
  malloc_trim(0);
  return prediction;
}

}  // namespace dermal
