// The network of a dermal model file, split at the CAM layer.
#pragma once

#include <torch/script.h>
#include <torch/version.h>

#include <cstdint>
#include <istream>
#include <memory>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"
#include "model/onednn_ops_check.hpp"

namespace dermal {

// The stages up to and including the CAM layer run as one frozen graph
// optimised for inference (no autograd through it); the stages after it as
// one frozen graph, so a gradient can flow back to the CAM layer's output.
// Stages listed in the description's frozen_only split the first graph:
// they run as frozen graphs of their own between optimised ones. With
// explain off, the whole network is one optimised graph. Nothing is
// optimised when the host asks so (LoadOptions::optimise) or where oneDNN's
// tensor ops crash (onednn_ops_check.hpp). The graphs hold the only copy of
// the weights. Immutable once loaded: shared by requests.

// What one part of a load cost: wall time, and the minor page faults of the
// whole process meanwhile (first touches of fresh memory, which set much of
// a load's time where faults are slow).
struct LoadPart {
  double ms = 0;
  std::int64_t page_faults = 0;
};

// The minor page faults of the whole process so far.
std::int64_t minor_page_faults();

// Where a load's time went (benchmarks/cold_start reports it).
struct LoadTimes {
  LoadPart read;      // the file: archive, weights, description
  LoadPart freeze;    // freezing each piece
  LoadPart optimise;  // optimize_for_inference on each piece
  LoadPart compose;   // the pieces of each run into one graph
  LoadPart check;     // the forward of a blank image
};

// How far graphs' outputs for a probe are from the exporter's, each as a
// fraction of the expected values' range (max - min); largest_* name the
// element. The tolerance is a fraction of that range.
struct ProbeComparison {
  double logits_difference = 0;  // largest |actual - expected| / range of the expected logits
  int logits_largest = 0;        // its label index
  double cam_difference = 0;     // the same for the CAM map (0 when it was not compared)
  int cam_largest = -1;          // its index in the map, row-major; -1: not compared
  double tolerance = 0;
  bool agrees() const { return logits_difference <= tolerance && cam_difference <= tolerance; }
};

// Whether a load compares the probe's Grad-CAM map, which takes a backward
// pass. Under LibTorch 2.x one backward in a process makes every later
// fork()'s children fail theirs ("autograd's threading in combination with
// fork-based multiprocessing"), and a pre-forking server loads in its master:
// there only the logits are compared (a wrong kernel before the CAM layer
// moves them too).
constexpr bool kProbeComparesCam = TORCH_VERSION_MAJOR < 2;

struct Network {
  ModelDescription description;
  std::vector<torch::jit::Module> before;  // up to the CAM layer: one graph unless frozen_only stages split it
  std::vector<torch::jit::Module> after;   // the rest: one graph (none with explain off)
  std::string cam_layer;
  std::uint64_t weight_bytes = 0;
  LoadTimes load_times;
  ProbeResult probe_result = ProbeResult::none;
  ProbeComparison probe_comparison;  // of the graphs served; zeros without a probe
  bool optimised = false;  // some graph is optimised for inference (oneDNN's rewrite)
};

// For tests only, never set by the library: a way to make the optimised
// graphs compute wrongly (each multiplies its output by 1.5), as a faulty
// oneDNN kernel would, so that the probe's fallback can be exercised.
struct LoadFaults {
  bool optimised_graphs_wrong = false;
};

// Reads, checks and prepares a model file; `cam_layer` empty means the
// description's. With explain off every stage is optimised. `onednn_ops` is
// the process's check of oneDNN's tensor ops (null: nothing is optimised, as
// LoadOptions::optimise false asks); where they failed, frozen graphs are
// loaded (probe_result frozen_fallback unless the probe refuses those too,
// one line on stderr). A file with a probe (dermal_probe.json,
// dermal_probe.png) has it run through the graphs: if the optimised graphs
// disagree and frozen ones agree, those are loaded instead (probe_result
// frozen_fallback, one line on stderr). Throws Error(io, invalid_model,
// unknown_layer, numerics_mismatch); LibTorch failures propagate.
std::shared_ptr<const Network> load_network(const std::string& path, const std::string& cam_layer, bool explain,
                                            const OnednnOpsCheck* onednn_ops, const LoadFaults& faults = {});

// The tolerance of the probe's comparison, as a fraction of the expected
// values' range: float32 graphs on other kernels (oneDNN's, ATen's) than the
// exporter's, or bfloat16 ones (the stages before the CAM layer rounded).
constexpr double kProbeToleranceFloat32 = 1e-3;
constexpr double kProbeToleranceBfloat16 = 0.5;  // docs/numerics-probe.md: a bf16 export measured 0.21

// Whether a CPU computes bfloat16 natively, from its /proc/cpuinfo text: a
// "flags" line with avx512_bf16 or amx_bf16 (on other CPUs LibTorch's bfloat16
// convolutions were measured 1.8x slower than float32).
bool native_bfloat16(std::istream& cpuinfo);

// oneDNN's ISA cap as oneDNN reads it, from the values (null: unset) of
// ONEDNN_MAX_CPU_ISA and of its older name DNNL_MAX_CPU_ISA: the first that
// is set and not empty, with its name; both empty when neither is.
struct OnednnIsaCap {
  std::string variable;
  std::string value;
};
OnednnIsaCap onednn_isa_cap(const char* onednn_max_cpu_isa, const char* dnnl_max_cpu_isa);

// Whether an ISA cap's value (empty: none) still lets oneDNN use bfloat16
// instructions: false for the ISAs below AVX512_CORE_BF16 (AVX2, as
// tools/onednn-cap.sh sets where oneDNN's convolutions are wrong, AVX512_CORE, ...).
bool onednn_allows_bfloat16(const std::string& max_cpu_isa);

// Runs graphs in order on x.
torch::Tensor run_stages(const std::vector<torch::jit::Module>& graphs, torch::Tensor x);

// x (1×3×H×W) through the network split at its CAM layer.
struct SplitForward {
  torch::Tensor activation;  // the CAM layer's output; requires grad when recorded
  torch::Tensor logits;      // recorded from the activation when `record`
};
// The stages before the CAM layer run without autograd (but not in inference
// mode, so that the activation can require grad); those after it are
// recorded from the activation only when `record`.
SplitForward run_split(const Network& network, const torch::Tensor& x, bool record);

}  // namespace dermal
