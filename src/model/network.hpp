// The network of a dermal model file, split at the CAM layer.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <istream>
#include <memory>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"

namespace dermal {

// The stages up to and including the CAM layer run as one frozen graph
// optimised for inference (no autograd through it); the stages after it as
// one frozen graph, so a gradient can flow back to the CAM layer's output.
// Stages listed in the description's frozen_only split the first graph:
// they run as frozen graphs of their own between optimised ones. With
// explain off, the whole network is one optimised graph. Under LibTorch 2.x
// nothing is optimised (network.cpp says why). The graphs hold the only copy
// of the weights. Immutable once loaded: shared by requests.

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

struct Network {
  ModelDescription description;
  std::vector<torch::jit::Module> before;  // up to the CAM layer: one graph unless frozen_only stages split it
  std::vector<torch::jit::Module> after;   // the rest: one graph (none with explain off)
  std::string cam_layer;
  std::uint64_t weight_bytes = 0;
  LoadTimes load_times;
};

// Reads, checks and prepares a model file; `cam_layer` empty means the
// description's. With explain off every stage is optimised. Throws
// Error(io, invalid_model, unknown_layer); LibTorch failures propagate.
std::shared_ptr<const Network> load_network(const std::string& path, const std::string& cam_layer, bool explain);

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
// instructions: false for the ISAs below AVX512_CORE_BF16 (AVX2, as the
// README advises on Debian 13, AVX512_CORE, ...).
bool onednn_allows_bfloat16(const std::string& max_cpu_isa);

// Runs graphs in order on x.
torch::Tensor run_stages(const std::vector<torch::jit::Module>& graphs, torch::Tensor x);

}  // namespace dermal
