// Loading a dermal model file: reading it, checking its description against
// the network, and preparing the two halves around the CAM layer.
#include "model/network.hpp"

#include <fmt/format.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/version.h>

#include <algorithm>
#include <fstream>
#include <numeric>

#include "model/allocator.hpp"
#include "model/torch_errors.hpp"

namespace dermal {

namespace {

constexpr const char* kDescriptionFile = "dermal.json";

// LibTorch 2.6 (Debian 13) runs optimize_for_inference's oneDNN graphs
// wrongly: NaN (EfficientNetV2-S), SIGFPE in a residual add (ResNet-50), an
// internal assert for max_pool2d and batch_norm outside InferenceMode
// (ResNet-50, DenseNet-121). Its frozen graphs are right; 1.13 keeps both.
constexpr bool kOptimiseForInference = TORCH_VERSION_MAJOR < 2;

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

void check_readable_zip(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error(ErrorCode::io, fmt::format("cannot open model file \"{}\"", path));
  char magic[4] = {};
  file.read(magic, 4);
  if (file.gcount() != 4 || std::string(magic, 4) != std::string("PK\x03\x04", 4))
    throw Error(ErrorCode::invalid_model,
                fmt::format("\"{}\" is not a TorchScript model archive (not a zip file)", path));
}

}  // namespace

std::shared_ptr<const Network> load_network(const std::string& path, const std::string& cam_layer, bool explain) {
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

  network->cam_layer = cam_layer.empty() ? d.cam_layer : cam_layer;
  const std::size_t split = std::find(d.stages.begin(), d.stages.end(), network->cam_layer) - d.stages.begin();
  if (split == d.stages.size())
    throw Error(ErrorCode::unknown_layer, fmt::format("CAM layer \"{}\" is not one of the model's stages: {}",
                                                      network->cam_layer, fmt::join(d.stages, ", ")));
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
  const std::size_t optimised_count = explain ? split + 1 : d.stages.size();
  std::vector<torch::jit::Module> prepared(d.stages.size());
  for (const std::size_t i : largest_first(module, d.stages)) {
    // Freezing folds batch norms into new weights; the originals are released
    // before optimising makes the next copy, so at most two copies of one
    // stage's weights exist at a time, and the largest stage goes first,
    // before the others' optimised forms take memory of their own.
    const torch::jit::Module stage = submodule(module, d.stages[i]);
    torch::jit::Module frozen = torch::jit::freeze(stage);
    release_tensors(stage);
    release_free_memory();
    const bool optimisable =
        kOptimiseForInference &&
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
  if (explain && (activation.dim() != 4 || activation.size(2) < 1 || activation.size(3) < 1))
    throw Error(ErrorCode::unknown_layer, fmt::format("CAM layer \"{}\" outputs shape {}, not a spatial NxCxHxW map",
                                                      network->cam_layer, fmt::join(activation.sizes(), "x")));
  if (logits.dim() != 2 || logits.size(0) != 1 || logits.size(1) != static_cast<std::int64_t>(d.labels.size()))
    throw Error(ErrorCode::invalid_model,
                fmt::format("the network outputs shape {} but the description lists {} labels",
                            fmt::join(logits.sizes(), "x"), d.labels.size()));
  return network;
}

torch::Tensor run_stages(const std::vector<torch::jit::Module>& stages, torch::Tensor x) {
  // LibTorch 2.6's profiling executor fuses frozen graphs (NNC) at their
  // second run: seconds of compiling per network, and NaN for a scripted
  // EfficientNetV2-S. The setting is per thread and restored on return.
  const torch::jit::GraphOptimizerEnabledGuard executor_optimisations(kOptimiseForInference);
  for (torch::jit::Module stage : stages) x = stage.forward({x}).toTensor();  // a handle copy: forward is not const
  return x;
}

}  // namespace dermal
