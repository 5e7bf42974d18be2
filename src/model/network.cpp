// Loading a dermal model file: reading it, checking its description against
// the network, and preparing the two halves around the CAM layer.
#include "model/network.hpp"

#include <fmt/format.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/version.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include <sys/resource.h>

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

std::uint64_t tensor_bytes(const torch::jit::Module& module) {
  std::uint64_t total = 0;
  for (const auto& attribute : module.named_attributes(/*recurse=*/true))
    if (attribute.value.isTensor()) total += attribute.value.toTensor().nbytes();
  return total;
}

// A part of the network frozen and optimised on its own while loading: a
// stage, or a child of a large nn.Sequential stage.
struct Piece {
  torch::jit::Module module;
  std::size_t stage;  // index in the description's stages
  std::uint64_t bytes;
};

// Pieces above this size are cut into their children where that keeps the
// forward (nn.Sequential), so that the copies freezing and optimising make
// beside the weights they replace stay small: they set the load's peak.
constexpr std::uint64_t kLargestPiece = 16 << 20;

bool is_sequential(const torch::jit::Module& module) {
  const std::string name = module.type()->name()->qualifiedName();
  const std::string container = "__torch__.torch.nn.modules.container.", sequential = ".Sequential";
  return name.compare(0, container.size(), container) == 0 && name.size() > sequential.size() &&
         name.compare(name.size() - sequential.size(), sequential.size(), sequential) == 0;
}

// Appends `module`'s pieces, in forward order.
void cut_into_pieces(const torch::jit::Module& module, std::size_t stage, std::vector<Piece>& pieces) {
  const std::uint64_t bytes = tensor_bytes(module);
  const auto children = module.children();
  if (bytes > kLargestPiece && is_sequential(module) && children.size() > 0) {
    for (const torch::jit::Module child : children) cut_into_pieces(child, stage, pieces);
  } else {
    pieces.push_back({module, stage, bytes});
  }
}

// Consecutive stages [first, end) that run as one graph, optimised or frozen only.
struct Run {
  std::size_t first, end;
  bool optimised;
};

// Stages [first, end) as the fewest runs. With `optimise`, stages listed in
// frozen_only get runs of their own, left unoptimised: oneDNN's rewrite works
// on a whole graph, so a run holding one would rewrite it too.
std::vector<Run> runs_of(const ModelDescription& d, std::size_t first, std::size_t end, bool optimise) {
  std::vector<Run> runs;
  for (std::size_t i = first; i < end; ++i) {
    const bool optimised = kOptimiseForInference && optimise &&
                           std::find(d.frozen_only.begin(), d.frozen_only.end(), d.stages[i]) == d.frozen_only.end();
    if (runs.empty() || runs.back().optimised != optimised) runs.push_back({i, i, optimised});
    runs.back().end = i + 1;
  }
  return runs;
}

// Calls `visit` on every node of `graph`, nested blocks included.
template <typename Visit>
void for_each_node(torch::jit::Graph& graph, Visit visit) {
  std::vector<torch::jit::Block*> blocks{graph.block()};
  while (!blocks.empty()) {
    torch::jit::Block* block = blocks.back();
    blocks.pop_back();
    for (torch::jit::Node* node : block->nodes()) {
      visit(node);
      for (torch::jit::Block* inner : node->blocks()) blocks.push_back(inner);
    }
  }
}

// Inlining records, in each node, the calls it came from (for error
// messages); those records point at functions of the model file's compilation
// unit, which are dropped while loading. Each node now names `module`'s own
// forward instead, so that an error raised by the graph cannot read freed memory.
void forget_inlined_calls(const torch::jit::Module& module) {
  torch::jit::Method forward = module.get_method("forward");
  for_each_node(*forward.graph(), [&](torch::jit::Node* node) {
    if (node->callstack())
      node->setCallStack(c10::make_intrusive<torch::jit::InlinedCallStack>(&forward.function(), node->sourceRange()));
  });
}

// Freezing a piece clones its modules, methods and all, into the model file's
// compilation unit and inlines them into one forward. The clones are never
// called again, yet would stay until the unit is freed after composing
// (reference model: load peak +6 MB, settled +2.5 MB). Drops the functions
// added to `unit` from index `first` on that are not methods of `kept` or of
// its submodules; drops none if one of those methods calls a function.
void drop_unused_functions(torch::jit::CompilationUnit& unit, std::size_t first, const torch::jit::Module& kept) {
  std::set<const torch::jit::Function*> methods;
  bool calls_functions = false;
  for (const torch::jit::Module module : kept.modules())
    for (torch::jit::Function* method : module.type()->methods()) {
      methods.insert(method);
      for_each_node(*toGraphFunction(*method).graph(), [&](const torch::jit::Node* node) {
        calls_functions = calls_functions || node->kind() == c10::prim::CallFunction;
      });
    }
  if (calls_functions) return;
  const std::vector<torch::jit::Function*> functions = unit.get_functions();
  for (std::size_t i = first; i < functions.size(); ++i)
    if (functions[i] != nullptr && methods.count(functions[i]) == 0) unit.unsafeRemoveMethod(functions[i]->qualname());
}

// One frozen module running `parts` (frozen modules) in order, as one graph.
// Throws Error(invalid_model) when a part's forward does not take one tensor.
torch::jit::Module compose(const std::vector<torch::jit::Module>& parts, const ModelDescription& d) {
  torch::jit::Module composed("dermal.Composed");
  std::string forward = "def forward(self, x):\n";
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string name = "part" + std::to_string(i);
    composed.register_module(name, parts[i]);
    forward += "    x = self." + name + ".forward(x)\n";
  }
  try {
    composed.define(forward + "    return x\n");
  } catch (const std::exception& e) {
    throw Error(ErrorCode::invalid_model, fmt::format("the network rejects a 1x3x{}x{} input, as its description sets: {}",
                                                      d.input_height, d.input_width, torch_message(e)));
  }
  torch::jit::Module frozen = torch::jit::freeze(composed);  // inlines the parts: constants shared, not copied
  forget_inlined_calls(frozen);
  return frozen;
}

// Drops a module's own references to its tensors (recursively). A frozen
// copy keeps the tensors it still uses; the rest (e.g. weights folded into
// new ones) are freed now rather than when the whole network is dropped.
void release_tensors(const torch::jit::Module& module) {
  for (torch::jit::Module part : module.modules())
    for (const auto& attribute : part.named_attributes(/*recurse=*/false))
      if (attribute.value.isTensor()) part.setattr(attribute.name, torch::empty({0}));
}

// Meters one part of a load at a time: the time and page faults from its
// construction, or from next(), are added to the current part when next()
// moves on or when it ends.
class PartMeter {
 public:
  explicit PartMeter(LoadPart& part) { start(part); }
  ~PartMeter() { stop(); }
  PartMeter(const PartMeter&) = delete;
  PartMeter& operator=(const PartMeter&) = delete;

  void next(LoadPart& part) {
    stop();
    start(part);
  }

 private:
  void start(LoadPart& part) {
    part_ = &part;
    started_ = std::chrono::steady_clock::now();
    faults_ = minor_page_faults();
  }
  void stop() {
    part_->ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count();
    part_->page_faults += minor_page_faults() - faults_;
  }

  LoadPart* part_ = nullptr;
  std::chrono::steady_clock::time_point started_;
  std::int64_t faults_ = 0;
};

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
  auto network = std::make_shared<Network>();
  LoadTimes& times = network->load_times;
  PartMeter meter(times.read);
  check_readable_zip(path);
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
                fmt::format("\"{}\" has no {} description; make one with python3 -m dermal.convert torchvision (or keras)", path,
                            kDescriptionFile));
  network->description = parse_description(extra[kDescriptionFile]);
  const ModelDescription& d = network->description;
  if (d.bfloat16) {
    std::ifstream cpuinfo("/proc/cpuinfo");
    if (!native_bfloat16(cpuinfo))
      throw Error(ErrorCode::invalid_model,
                  fmt::format("\"{}\" computes in bfloat16, and this CPU has no native bfloat16 (neither "
                              "avx512_bf16 nor amx_bf16 in /proc/cpuinfo), so it would run slower than float32; "
                              "export it without --precision bf16",
                              path));
    const OnednnIsaCap cap = onednn_isa_cap(std::getenv("ONEDNN_MAX_CPU_ISA"), std::getenv("DNNL_MAX_CPU_ISA"));
    if (!onednn_allows_bfloat16(cap.value))
      throw Error(ErrorCode::invalid_model,
                  fmt::format("\"{}\" computes in bfloat16, and {}={} keeps oneDNN from this CPU's bfloat16 "
                              "instructions, so it would run slower than float32; use the float32 file, or unset {}",
                              path, cap.variable, cap.value, cap.variable));
  }

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
  std::vector<Run> runs = runs_of(d, 0, optimised_count, true);
  const std::vector<Run> after = runs_of(d, optimised_count, d.stages.size(), false);
  runs.insert(runs.end(), after.begin(), after.end());
  std::vector<bool> optimised(d.stages.size());
  for (const Run& run : runs) std::fill(optimised.begin() + run.first, optimised.begin() + run.end, run.optimised);

  std::vector<Piece> pieces;
  for (std::size_t i = 0; i < d.stages.size(); ++i) cut_into_pieces(submodule(module, d.stages[i]), i, pieces);
  std::vector<std::size_t> largest_first(pieces.size());
  std::iota(largest_first.begin(), largest_first.end(), std::size_t{0});
  std::stable_sort(largest_first.begin(), largest_first.end(),
                   [&](std::size_t a, std::size_t b) { return pieces[a].bytes > pieces[b].bytes; });
  torch::jit::CompilationUnit& file_unit = *module.type()->compilation_unit();  // lives while `module` does
  for (const std::size_t i : largest_first) {
    // Freezing folds batch norms into new weights; the originals are released
    // before optimising makes the next copy, so at most two copies of one
    // piece's weights exist at a time, and the largest piece goes first,
    // before the others' optimised forms take memory of their own.
    Piece& piece = pieces[i];
    const std::size_t first_new_function = file_unit.get_functions().size();
    meter.next(times.freeze);
    torch::jit::Module frozen = torch::jit::freeze(piece.module);
    release_tensors(piece.module);
    release_free_memory();
    meter.next(times.optimise);
    piece.module = optimised[piece.stage] ? torch::jit::optimize_for_inference(frozen) : frozen;
    forget_inlined_calls(piece.module);
    drop_unused_functions(file_unit, first_new_function, piece.module);
  }
  meter.next(times.compose);
  module = torch::jit::Module();

  // Each run's pieces become one graph: the request runs one graph before
  // the CAM layer and one after it (more only around frozen_only stages).
  for (const Run& run : runs) {
    std::vector<torch::jit::Module> parts;
    for (const Piece& piece : pieces)
      if (piece.stage >= run.first && piece.stage < run.end) parts.push_back(piece.module);
    (run.first < optimised_count ? network->before : network->after).push_back(compose(parts, d));
  }
  pieces.clear();  // the last handles on the file's compilation unit: its own methods go now
  // Handed back before the check's forward: under LoadOptions::tune_allocator
  // its activations are mapped anew, so what composing freed would stay
  // resident beside them (reference model: load peak 297 -> 283 MB).
  release_free_memory();

  // One forward of a blank image checks the description against the network.
  meter.next(times.check);
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

std::int64_t minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

bool native_bfloat16(std::istream& cpuinfo) {
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.compare(0, 5, "flags") != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string flag; words >> flag;)
      if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
    return false;  // every CPU lists the same flags
  }
  return false;
}

OnednnIsaCap onednn_isa_cap(const char* onednn_max_cpu_isa, const char* dnnl_max_cpu_isa) {
  if (onednn_max_cpu_isa != nullptr && *onednn_max_cpu_isa != '\0') return {"ONEDNN_MAX_CPU_ISA", onednn_max_cpu_isa};
  if (dnnl_max_cpu_isa != nullptr && *dnnl_max_cpu_isa != '\0') return {"DNNL_MAX_CPU_ISA", dnnl_max_cpu_isa};
  return {};
}

bool onednn_allows_bfloat16(const std::string& max_cpu_isa) {
  std::string isa = max_cpu_isa;
  std::transform(isa.begin(), isa.end(), isa.begin(), [](unsigned char c) { return std::toupper(c); });
  static const std::set<std::string> without_bfloat16{
      "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_MIC", "AVX512_MIC_4OPS", "AVX512_CORE",
      "AVX512_CORE_VNNI"};
  return without_bfloat16.count(isa) == 0;
}

torch::Tensor run_stages(const std::vector<torch::jit::Module>& graphs, torch::Tensor x) {
  // The graphs are frozen (and optimised) already; the graph executor's own
  // passes are off. On LibTorch 1.13 its profiling runs only slowed the
  // first request after the load (reference model: +70 ms; later requests
  // no faster); on 2.6 it fuses frozen graphs (NNC) at their second run:
  // seconds of compiling, and NaN for a scripted EfficientNetV2-S. The
  // setting is per thread, restored on return.
  const torch::jit::GraphOptimizerEnabledGuard executor_optimisations(false);
  for (torch::jit::Module graph : graphs) x = graph.forward({x}).toTensor();  // a handle copy: forward is not const
  return x;
}

}  // namespace dermal
