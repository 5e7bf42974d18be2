// Loading a dermal model file: reading it, checking its description against
// the network, and preparing the two halves around the CAM layer.
#include "model/network.hpp"

#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/version.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>

#include <sys/resource.h>

#include "heatmap/cam.hpp"
#include "image/preprocess.hpp"
#include "model/allocator.hpp"
#include "model/torch_errors.hpp"

namespace dermal {

namespace {

constexpr const char* kDescriptionFile = "dermal.json";
constexpr const char* kProbeFile = "dermal_probe.json";
constexpr const char* kProbeImageFile = "dermal_probe.png";
constexpr int kProbeFormat = 1;

// The library's one way to tell the host something it should act on: a line
// on stderr (as LibTorch's own warnings go), no state changed.
void warn(const std::string& message) { fmt::print(stderr, "dermal: warning: {}\n", message); }

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
    const bool optimised = optimise &&
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
// With `wrong` (LoadFaults, tests only) the output is multiplied by 1.5.
torch::jit::Module compose(const std::vector<torch::jit::Module>& parts, const ModelDescription& d, bool wrong) {
  torch::jit::Module composed("dermal.Composed");
  std::string forward = "def forward(self, x):\n";
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string name = "part" + std::to_string(i);
    composed.register_module(name, parts[i]);
    forward += "    x = self." + name + ".forward(x)\n";
  }
  if (wrong) forward += "    x = x * 1.5\n";
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

// A model file's probe: an image, and what the exporting framework computed
// for it with oneDNN off (dermal_probe.json, written by dermal.convert.probe).
struct Probe {
  Image image;
  std::vector<float> logits;
  int class_index = 0;        // the class whose Grad-CAM map is stored
  std::string cam_layer;      // the layer of that map
  std::vector<float> cam;     // Grad-CAM before ReLU, row-major; empty: none stored
  int cam_width = 0, cam_height = 0;
  std::string computed_by;
};

[[noreturn]] void refuse_probe(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::invalid_model, fmt::format("\"{}\": invalid probe ({}): {}", path, kProbeFile, what));
}

std::vector<float> finite_numbers(const nlohmann::json& value, const std::string& path, const char* name) {
  if (!value.is_array() || value.empty()) refuse_probe(path, fmt::format("\"{}\" must be a non-empty list of numbers", name));
  std::vector<float> numbers;
  for (const nlohmann::json& item : value) {
    if (!item.is_number() || !std::isfinite(item.get<double>()))
      refuse_probe(path, fmt::format("\"{}\" holds {}, not a finite number", name, item.dump()));
    numbers.push_back(item.get<float>());
  }
  return numbers;
}

// The probe of a file from its two extra files (both empty: none, nullopt).
// Throws Error(invalid_model) naming what is wrong.
std::optional<Probe> read_probe(const std::string& path, const std::string& text, const std::string& png,
                                const ModelDescription& d) {
  if (text.empty() && png.empty()) return std::nullopt;
  if (text.empty() || png.empty())
    refuse_probe(path, fmt::format("the file has {} but not {}", text.empty() ? kProbeImageFile : kProbeFile,
                                   text.empty() ? kProbeFile : kProbeImageFile));
  const nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!root.is_object()) refuse_probe(path, "not a JSON object");
  const auto field = [&](const char* name) -> const nlohmann::json& {
    const auto it = root.find(name);
    if (it == root.end()) refuse_probe(path, fmt::format("no \"{}\"", name));
    return *it;
  };
  if (field("probe_format") != kProbeFormat)
    refuse_probe(path, fmt::format("probe_format {} is not supported (this library reads {})",
                                   field("probe_format").dump(), kProbeFormat));
  Probe probe;
  probe.logits = finite_numbers(field("logits"), path, "logits");
  if (probe.logits.size() != d.labels.size())
    refuse_probe(path, fmt::format("{} logits for {} labels", probe.logits.size(), d.labels.size()));
  const nlohmann::json& class_index = field("class");
  if (!class_index.is_number_integer() || class_index.get<std::int64_t>() < 0 ||
      class_index.get<std::int64_t>() >= static_cast<std::int64_t>(d.labels.size()))
    refuse_probe(path, fmt::format("\"class\" {} is not a label index", class_index.dump()));
  probe.class_index = class_index.get<int>();
  const nlohmann::json& cam_layer = field("cam_layer");
  if (!cam_layer.is_string()) refuse_probe(path, "\"cam_layer\" must be a string");
  probe.cam_layer = cam_layer.get<std::string>();
  const nlohmann::json& cam = field("cam");
  if (!cam.is_object() || !cam.contains("width") || !cam.contains("height") || !cam.contains("values") ||
      !cam["width"].is_number_integer() || !cam["height"].is_number_integer())
    refuse_probe(path, "\"cam\" must be an object with integers \"width\", \"height\" and a list \"values\"");
  probe.cam_width = cam["width"].get<int>();
  probe.cam_height = cam["height"].get<int>();
  probe.cam = finite_numbers(cam["values"], path, "cam.values");
  if (probe.cam_width < 1 || probe.cam_height < 1 ||
      probe.cam.size() != static_cast<std::size_t>(probe.cam_width) * probe.cam_height)
    refuse_probe(path, fmt::format("\"cam\" holds {} values for {}x{}", probe.cam.size(), probe.cam_width,
                                   probe.cam_height));
  const auto computed_by = root.find("computed_by");
  if (computed_by != root.end() && computed_by->is_string()) probe.computed_by = computed_by->get<std::string>();
  try {
    probe.image = decode_image(reinterpret_cast<const std::uint8_t*>(png.data()), png.size());
  } catch (const Error& e) {
    refuse_probe(path, fmt::format("its image {}: {}", kProbeImageFile, e.what()));
  }
  return probe;
}

// The range of the expected values (max - min), the scale differences are
// measured in; their largest magnitude when all are equal, 1 when all are 0.
double value_range(const std::vector<float>& expected) {
  const auto [low, high] = std::minmax_element(expected.begin(), expected.end());
  if (*high > *low) return static_cast<double>(*high) - *low;
  const double largest = std::max(std::abs(*low), std::abs(*high));
  return largest > 0 ? largest : 1.0;
}

// The largest |actual - expected| as a fraction of value_range(expected), and where.
std::pair<double, int> largest_difference(const torch::Tensor& actual, const std::vector<float>& expected) {
  const torch::Tensor values = actual.detach().to(torch::kFloat32).contiguous().reshape({-1});
  if (values.numel() != static_cast<std::int64_t>(expected.size())) return {INFINITY, -1};
  const float* a = values.data_ptr<float>();
  const double range = value_range(expected);
  double worst = 0;
  int at = 0;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const double difference = std::abs(static_cast<double>(a[i]) - expected[i]) / range;
    if (!(difference <= worst)) {  // NaN counts as the largest
      worst = std::isnan(difference) ? INFINITY : difference;
      at = static_cast<int>(i);
      if (std::isnan(difference)) break;
    }
  }
  return {worst, at};
}

// The flags of /proc/cpuinfo that decide which kernels oneDNN runs, and the
// ISA cap in the environment: "avx2 avx512f ... (ONEDNN_MAX_CPU_ISA unset)".
std::string onednn_cpu_features() {
  static const std::set<std::string> relevant{"avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                                              "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
                                              "amx_int8"};
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::vector<std::string> flags;
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.compare(0, 5, "flags") != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string flag; words >> flag;)
      if (relevant.count(flag)) flags.push_back(flag);
    break;
  }
  const OnednnIsaCap cap = onednn_isa_cap(std::getenv("ONEDNN_MAX_CPU_ISA"), std::getenv("DNNL_MAX_CPU_ISA"));
  return fmt::format("{} ({})", flags.empty() ? std::string("no AVX2 or AVX-512") : fmt::format("{}", fmt::join(flags, " ")),
                     cap.variable.empty() ? std::string("ONEDNN_MAX_CPU_ISA unset")
                                          : fmt::format("{}={}", cap.variable, cap.value));
}

// A network prepared from the file, with its probe (if any) and how the
// check forward compared with it.
struct Prepared {
  std::shared_ptr<Network> network;
  std::optional<Probe> probe;
  ProbeComparison comparison;
};

// Reads, checks and prepares the file; `optimise` false: no graph is
// optimised for inference. The check forward runs the probe's image when
// the file has one (else a blank image) and compares with it.
Prepared prepare(const std::string& path, const std::string& cam_layer, bool explain, bool optimise,
                 const LoadFaults& faults) {
  Prepared prepared;
  prepared.network = std::make_shared<Network>();
  Network* network = prepared.network.get();
  LoadTimes& times = network->load_times;
  PartMeter meter(times.read);
  check_readable_zip(path);
  torch::jit::ExtraFilesMap extra{{kDescriptionFile, ""}, {kProbeFile, ""}, {kProbeImageFile, ""}};
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU, extra);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::invalid_model,
                fmt::format("\"{}\" is not a loadable TorchScript model: {}", path, torch_message(e)));
  }
  if (extra[kDescriptionFile].empty())
    throw Error(ErrorCode::invalid_model,
                fmt::format("\"{}\" has no {} description; make one with python3 -m dermal.convert torchvision "
                            "(or keras)",
                            path, kDescriptionFile));
  network->description = parse_description(extra[kDescriptionFile]);
  const ModelDescription& d = network->description;
  prepared.probe = read_probe(path, extra[kProbeFile], extra[kProbeImageFile], d);
  extra.clear();
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
  std::vector<Run> runs = runs_of(d, 0, optimised_count, optimise);
  const std::vector<Run> after = runs_of(d, optimised_count, d.stages.size(), false);
  runs.insert(runs.end(), after.begin(), after.end());
  std::vector<bool> optimised(d.stages.size());
  for (const Run& run : runs) {
    std::fill(optimised.begin() + run.first, optimised.begin() + run.end, run.optimised);
    network->optimised = network->optimised || run.optimised;
  }

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
    (run.first < optimised_count ? network->before : network->after)
        .push_back(compose(parts, d, run.optimised && faults.optimised_graphs_wrong));
  }
  pieces.clear();  // the last handles on the file's compilation unit: its own methods go now
  // Handed back before the check's forward: under LoadOptions::tune_allocator
  // its activations are mapped anew, so what composing freed would stay
  // resident beside them (reference model: load peak 297 -> 283 MB).
  release_free_memory();

  // One forward checks the description against the network: of the probe's
  // image when the file has one (its logits and Grad-CAM map are compared
  // with the exporter's), else of a blank image.
  meter.next(times.check);
  const std::optional<Probe>& probe = prepared.probe;
  // A bfloat16 file's map is not compared: rounded activations moved the
  // reference model's map by 0.52 of its range (docs/numerics-probe.md).
  const bool compare_cam =
      kProbeComparesCam && probe && explain && !d.bfloat16 && probe->cam_layer == network->cam_layer;
  std::vector<float> input;
  torch::Tensor x = torch::zeros({1, 3, d.input_height, d.input_width});
  if (probe) {
    input = preprocess(probe->image, d);
    x = torch::from_blob(input.data(), {1, 3, d.input_height, d.input_width});
  }
  torch::Tensor activation, logits;
  try {
    SplitForward forward = run_split(*network, x, compare_cam);
    activation = std::move(forward.activation);
    logits = std::move(forward.logits);
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
  if (probe) {
    ProbeComparison& comparison = prepared.comparison;
    comparison.tolerance = d.bfloat16 ? kProbeToleranceBfloat16 : kProbeToleranceFloat32;
    std::tie(comparison.logits_difference, comparison.logits_largest) = largest_difference(logits, probe->logits);
    if (compare_cam) {
      const torch::Tensor gradient =
          translate_failures("running the probe", [&] {
            return torch::autograd::grad({logits[0][probe->class_index]}, {activation})[0][0];
          });
      const torch::Tensor cam = cam_map(CamMethod::gradcam, activation.detach()[0], gradient);
      std::tie(comparison.cam_difference, comparison.cam_largest) = largest_difference(cam, probe->cam);
    }
    network->probe_comparison = comparison;
  }
  return prepared;
}

}  // namespace

std::shared_ptr<const Network> load_network(const std::string& path, const std::string& cam_layer, bool explain,
                                            const OnednnOpsCheck* onednn_ops, const LoadFaults& faults) {
  const bool ops_failed = onednn_ops && !onednn_ops->ran;
  Prepared prepared = prepare(path, cam_layer, explain, onednn_ops && onednn_ops->ran, faults);
  if (!prepared.network->description.resample)  // a file from before "resample": loaded, saying how to get PIL's resize
    warn(fmt::format("\"{}\" has no input.resample in its description (written before it existed), so photos are "
                     "resized with a float bilinear filter that is not PIL's Image.resize; to resize as the app's PIL "
                     "code does, export it again with python3 -m dermal.convert torchvision (or keras) --resample FILTER",
                     path));
  if (ops_failed && (!prepared.probe || prepared.comparison.agrees())) {
    prepared.network->probe_result = ProbeResult::frozen_fallback;
    warn(fmt::format("\"{}\": oneDNN's tensor ops, which optimised graphs run, {} in a child process on this CPU's "
                     "{}; serving the frozen graphs (slower)",
                     path, onednn_ops->finding, onednn_cpu_features()));
    return prepared.network;
  }
  if (!prepared.probe) return prepared.network;
  if (prepared.comparison.agrees()) {
    prepared.network->probe_result = ProbeResult::passed;
    return prepared.network;
  }
  const bool had_optimised = prepared.network->optimised;
  const ProbeComparison optimised = prepared.comparison;
  if (had_optimised) {
    prepared.network.reset();  // its weights go before the frozen graphs are made
    release_free_memory();
    prepared = prepare(path, cam_layer, explain, /*optimise=*/false, faults);
    if (prepared.comparison.agrees()) {
      prepared.network->probe_result = ProbeResult::frozen_fallback;
      warn(fmt::format("\"{}\": the optimised graphs disagree with the file's probe (largest difference {:.3g} of the "
                       "expected range, tolerance {:.0e}) on this CPU's {}; serving the frozen graphs, which agree "
                       "(slower)",
                       path, std::max(optimised.logits_difference, optimised.cam_difference), optimised.tolerance,
                       onednn_cpu_features()));
      return prepared.network;
    }
  }
  const ProbeComparison& c = prepared.comparison;
  const Probe& probe = *prepared.probe;
  const ModelDescription& d = prepared.network->description;
  std::string where = fmt::format("logits {:.3g} of their range (at \"{}\")", c.logits_difference,
                                  d.labels[c.logits_largest]);
  if (c.cam_largest >= 0)
    where += fmt::format(", Grad-CAM map of \"{}\" {:.3g} of its range (at x={}, y={})", d.labels[probe.class_index],
                         c.cam_difference, c.cam_largest % probe.cam_width, c.cam_largest / probe.cam_width);
  throw Error(ErrorCode::numerics_mismatch,
              fmt::format("\"{}\": {} the file's probe as its exporter did{}: largest difference: {} "
                          "(tolerance {:.0e}). oneDNN ran with this CPU's {}; try setting ONEDNN_MAX_CPU_ISA=AVX2 in "
                          "the environment",
                          path, had_optimised ? "neither the optimised nor the frozen graphs compute" : "the graphs do not compute",
                          probe.computed_by.empty() ? "" : " (" + probe.computed_by + ")", where, c.tolerance,
                          onednn_cpu_features()));
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

SplitForward run_split(const Network& network, const torch::Tensor& x, bool record) {
  SplitForward out;
  {
    torch::NoGradGuard no_grad;
    out.activation = run_stages(network.before, x);
  }
  torch::AutoGradMode recording(record);
  out.activation.requires_grad_(record);
  out.logits = run_stages(network.after, out.activation);
  return out;
}

}  // namespace dermal
