// Class activation maps from one layer's activation and gradient (internal).
#pragma once

#include <torch/torch.h>

#include "dermal/dermal.hpp"

namespace dermal {

// XGrad-CAM's ε in w_k = Σ_ij A·G / (Σ_ij A + ε), as in pytorch-grad-cam.
constexpr float kXGradCamEpsilon = 1e-7f;

// FEM's k in the threshold mean + k·σ, as in pytorch-grad-cam.
constexpr float kFemSigmas = 2.0f;

// KPCA-CAM's map is all zeros (flat) when the centred kernel's leading
// eigenvalue is at most this times H·W (the kernel's entries lie in (−1, 1)):
// no structure, only rounding.
constexpr double kKpcaFlatEigenvalue = 1e-9;

// Finer-CAM's comparison: the explained class against at most this many
// classes whose logits are nearest to its own, with strength α = 1 and ε = 1e-9
// in the denominator, as pytorch-grad-cam's defaults.
constexpr int kFinerComparisons = 3;
constexpr double kFinerEpsilon = 1e-9;

// A map (after ReLU, max M, min m) is flat unless M − m > kFlatRelativeEpsilon·M
// and M − m ≥ FLT_MIN. The test is relative, so a map's flatness does not
// depend on its scale (CAMs scale with the activations and the score's
// gradient, which can be tiny for healthy models); 1e-6 is ~16 float32 ulps.
constexpr float kFlatRelativeEpsilon = 1e-6f;
// That test, for a map whose smallest value is lo and largest hi.
bool is_flat(float lo, float hi);

// Whether `method` needs the gradient of the explained score at the CAM layer
// (false for eigencam, fem and kpcacam, which read the activation only, for
// ablationcam, which re-runs the stages after the CAM layer instead, and for
// scorecam, which re-runs the whole network).
bool cam_method_uses_gradient(CamMethod method);

// The scalar whose gradient `method` explains, from one image's logits (N,
// recorded by autograd) and the explained class c: the logit y_c, except for
// finercam: Σ_j p_j (y_c − y_j) / (Σ_j p_j + 1e-9) over the (up to)
// kFinerComparisons other classes j whose logits are nearest to y_c (ties:
// lower index first), p = softmax(y) inside the graph. With one class it is 0.
torch::Tensor explained_score(CamMethod method, const torch::Tensor& logits, int64_t class_index);

// The un-normalised map (H×W, float32) of `method` for one image, from the
// CAM layer's activation A (K×H×W) and the explained score's gradient
// G = ∂score/∂A (same shape; ignored, and may be undefined, when
// cam_method_uses_gradient is false).
// Runs without autograd whatever the caller's grad mode. A NaN or Inf in an
// input the method uses gives a non-finite map (never an exception); wrong
// shapes throw Error(invalid_argument).
//
// EigenCAM's sign: the projection p onto the first right-singular vector is
// flipped so that Σ p·(S − mean S) > 0, where S = Σ_k A_k; if that sum is
// exactly 0, so that p's entry of largest magnitude (first in row-major order)
// is positive. EigenGrad-CAM is EigenCAM of G·A (elementwise), its sign so
// taken against S = Σ_k G_k·A_k. KPCA-CAM's sign: its entry of largest
// magnitude (first in row-major order) is positive, as scikit-learn makes it.
// ablationcam and scorecam have no formula here (their weights need the
// network: see ablation_weights and score_cam_logits in src/model/predict.cpp)
// and throw Error(invalid_argument).
//
// eigen_smooth: a method whose map is a sum over channels of terms T_k
// (w_k A_k, G_k A_k, ReLU(G_k) A_k, ReLU(G_k A_k)) gives instead EigenCAM of T
// (the sign so that it agrees with Σ_k T_k); eigencam, eigengradcam, kpcacam
// and fem ignore it, as pytorch-grad-cam does.
torch::Tensor cam_map(CamMethod method, const torch::Tensor& activation,
                      const torch::Tensor& gradient, bool eigen_smooth = false);

// Σ_k w_k A_k (or with eigen_smooth, EigenCAM of the terms w_k A_k) for
// per-channel weights w (K) and A (K×H×W), float32, no autograd.
torch::Tensor weighted_map(const torch::Tensor& weights, const torch::Tensor& activation, bool eigen_smooth = false);

struct NormalizedMap {
  Heatmap map;  // values in [0, 1]; all zeros when flat
  bool flat = false;
};

// ReLU, then (m − min)/(max − min). A map without contrast (see
// kFlatRelativeEpsilon) or with any NaN/Inf comes back all zeros and flat.
// `map` must be H×W (any float dtype, any device); else Error(invalid_argument).
NormalizedMap normalize_map(const torch::Tensor& map);

}  // namespace dermal
