// Class activation maps from one layer's activation and gradient (internal).
#pragma once

#include <torch/torch.h>

#include "dermal/dermal.hpp"

namespace dermal {

// XGrad-CAM's ε in w_k = Σ_ij A·G / (Σ_ij A + ε), as in pytorch-grad-cam.
constexpr float kXGradCamEpsilon = 1e-7f;

// A map (after ReLU, max M, min m) is flat unless M − m > kFlatRelativeEpsilon·M
// and M − m ≥ FLT_MIN. The test is relative, so a map's flatness does not
// depend on its scale (CAMs scale with the activations and the score's
// gradient, which can be tiny for healthy models); 1e-6 is ~16 float32 ulps.
constexpr float kFlatRelativeEpsilon = 1e-6f;

// The un-normalised map (H×W, float32) of `method` for one image, from the
// CAM layer's activation A (K×H×W) and the class score's gradient
// G = ∂score/∂A (same shape; ignored, and may be undefined, for eigencam).
// Runs without autograd whatever the caller's grad mode. A NaN or Inf in an
// input the method uses gives a non-finite map (never an exception); wrong
// shapes throw Error(invalid_argument).
//
// EigenCAM's sign: the projection p onto the first right-singular vector is
// flipped so that Σ p·(S − mean S) > 0, where S = Σ_k A_k; if that sum is
// exactly 0, so that p's entry of largest magnitude (first in row-major order)
// is positive.
torch::Tensor cam_map(CamMethod method, const torch::Tensor& activation,
                      const torch::Tensor& gradient);

struct NormalizedMap {
  Heatmap map;  // values in [0, 1]; all zeros when flat
  bool flat = false;
};

// ReLU, then (m − min)/(max − min). A map without contrast (see
// kFlatRelativeEpsilon) or with any NaN/Inf comes back all zeros and flat.
// `map` must be H×W (any float dtype, any device); else Error(invalid_argument).
NormalizedMap normalize_map(const torch::Tensor& map);

}  // namespace dermal
