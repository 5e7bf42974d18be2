// The figures that say how faithful a map is (internal; docs/cam-methods.md).
#pragma once

#include <torch/torch.h>

#include "dermal/dermal.hpp"

namespace dermal {

// ROAD's imputation stops at this residual relative to the right-hand side.
constexpr double kRoadRelativeResidual = 1e-10;

// The map stretched to height × width (bilinear, half-pixel centres, as
// OpenCV's resize and PyTorch's align_corners=False), then min-max scaled to
// [0, 1] again; all zeros if it has no contrast. A float32 H×W tensor.
torch::Tensor map_at_input(const Heatmap& heatmap, int height, int width);

// `input` (C×H×W float32, the normalised tensor) with ROAD's most relevant
// `percent` % removed: the pixels where `map` (H×W) ≥ its (100 − percent)-th
// percentile (NumPy's linear interpolation) are replaced, channel by channel,
// by the solution of "each removed pixel is the weighted mean of its 8
// neighbours inside the picture" (sides 1/6, corners 1/12), without noise.
// All removed: all zeros. Returns a new tensor; `percent` must be 1..99.
torch::Tensor road_remove(const torch::Tensor& input, const torch::Tensor& map, int percent);

}  // namespace dermal
