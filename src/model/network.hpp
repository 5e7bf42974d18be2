// The network of a dermal model file, split at the CAM layer.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"

namespace dermal {

// Stages up to and including the CAM layer are frozen and optimised for
// inference (no autograd through them); the stages after it are frozen only,
// so a gradient can flow back to the CAM layer's output. Each stage holds
// the only copy of its weights. Immutable once loaded: shared by requests.
struct Network {
  ModelDescription description;
  std::vector<torch::jit::Module> before;  // ends with the CAM layer
  std::vector<torch::jit::Module> after;
  std::string cam_layer;
  std::uint64_t weight_bytes = 0;
};

// Reads, checks and prepares a model file; `cam_layer` empty means the
// description's. With explain off every stage is optimised. Throws
// Error(io, invalid_model, unknown_layer); LibTorch failures propagate.
std::shared_ptr<const Network> load_network(const std::string& path, const std::string& cam_layer, bool explain);

// Runs stages in order on x.
torch::Tensor run_stages(const std::vector<torch::jit::Module>& stages, torch::Tensor x);

}  // namespace dermal
