#include "heatmap/cam.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace dermal {
namespace {

std::string shape_string(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "x" : "") + std::to_string(t.size(i));
  return s + "]";
}

// The terms w_k A_k for per-channel weights w (K).
torch::Tensor weighted_terms(const torch::Tensor& weights, const torch::Tensor& a) {
  return weights.view({-1, 1, 1}) * a;
}

// EigenCAM: A as (H·W)×K, channels centred over positions, projected on the
// first right-singular vector, sign fixed as documented in cam.hpp.
torch::Tensor eigen_cam(const torch::Tensor& a) {
  const int64_t k = a.size(0), h = a.size(1), w = a.size(2);
  if (!torch::isfinite(a).all().item<bool>()) {
    return torch::full({h, w}, std::numeric_limits<float>::quiet_NaN(), a.options());
  }
  torch::Tensor x = a.reshape({k, h * w}).t();
  x = x - x.mean(0, /*keepdim=*/true);
  torch::Tensor vh = std::get<2>(at::linalg_svd(x, /*full_matrices=*/false));
  torch::Tensor p = x.matmul(vh[0]);
  torch::Tensor s = a.sum(0).reshape({h * w});
  const float agreement = (p * (s - s.mean())).sum().item<float>();
  const bool flip = agreement != 0.0f ? agreement < 0.0f
                                      : p[p.abs().argmax().item<int64_t>()].item<float>() < 0.0f;
  return (flip ? -p : p).reshape({h, w});
}

// KPCA-CAM: kernel PCA (one component) of A as (H·W)×K, channels centred over
// positions, with scikit-learn's default sigmoid kernel tanh(x·y / K + 1); the
// centred kernel's leading eigenvector scaled by √λ (all zeros when λ is at
// most kKpcaFlatEigenvalue·H·W). In float64:
// the kernel's eigenvector is sensitive where the eigenvalues lie close.
torch::Tensor kpca_cam(const torch::Tensor& a) {
  const int64_t k = a.size(0), h = a.size(1), w = a.size(2);
  if (!torch::isfinite(a).all().item<bool>()) {
    return torch::full({h, w}, std::numeric_limits<float>::quiet_NaN(), a.options());
  }
  torch::Tensor x = a.to(torch::kDouble).reshape({k, h * w}).t();
  x = x - x.mean(0, /*keepdim=*/true);
  torch::Tensor kernel = torch::tanh(x.matmul(x.t()) / static_cast<double>(k) + 1.0);
  kernel = kernel - kernel.mean(0, true) - kernel.mean(1, true) + kernel.mean();
  auto [values, vectors] = at::linalg_eigh(kernel);  // ascending
  const double lambda = values[-1].item<double>();
  if (!(lambda > kKpcaFlatEigenvalue * static_cast<double>(h * w))) return torch::zeros({h, w}, a.options());
  torch::Tensor v = vectors.select(1, h * w - 1);
  if (v[v.abs().argmax().item<int64_t>()].item<double>() < 0.0) v = -v;
  return (v * std::sqrt(lambda)).to(torch::kFloat).reshape({h, w});
}

// FEM: w_k = the fraction of positions where A_k > mean(A_k) + kFemSigmas·σ(A_k)
// (σ over positions, population); map = Σ_k w_k A_k.
torch::Tensor fem(const torch::Tensor& a) {
  const torch::Tensor mean = a.mean({1, 2}, /*keepdim=*/true);
  const torch::Tensor sigma = (a - mean).square().mean({1, 2}, /*keepdim=*/true).sqrt();
  const torch::Tensor weights = (a > mean + kFemSigmas * sigma).to(torch::kFloat).mean({1, 2});
  return weighted_terms(weights, a).sum(0);
}

// The gradient as float32 on the activation's device, checked to match its shape.
torch::Tensor checked_gradient(const torch::Tensor& activation, const torch::Tensor& gradient) {
  if (!gradient.defined() || gradient.sizes() != activation.sizes()) {
    throw Error(ErrorCode::invalid_argument,
                "CAM gradient must have the activation's shape " + shape_string(activation) +
                    ", got " + (gradient.defined() ? shape_string(gradient) : std::string("none")));
  }
  return gradient.to(activation.device(), torch::kFloat);
}

}  // namespace

bool cam_method_uses_gradient(CamMethod method) {
  return method != CamMethod::eigencam && method != CamMethod::fem && method != CamMethod::kpcacam &&
         method != CamMethod::ablationcam && method != CamMethod::scorecam;
}

torch::Tensor explained_score(CamMethod method, const torch::Tensor& logits, int64_t class_index) {
  if (method != CamMethod::finercam) return logits[class_index];
  std::vector<int64_t> others;
  std::vector<float> distance;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor d = (logits.detach() - logits.detach()[class_index]).abs().to(torch::kFloat).contiguous();
    distance.assign(d.data_ptr<float>(), d.data_ptr<float>() + d.numel());
  }
  for (int64_t j = 0; j < static_cast<int64_t>(distance.size()); ++j)
    if (j != class_index) others.push_back(j);
  std::stable_sort(others.begin(), others.end(), [&](int64_t i, int64_t j) { return distance[i] < distance[j]; });
  others.resize(std::min<std::size_t>(others.size(), kFinerComparisons));
  if (others.empty()) return logits[class_index] * 0.0;  // nothing to compare with: 0, gradient 0
  const torch::Tensor p = torch::softmax(logits, 0);
  torch::Tensor numerator = torch::zeros({}, logits.options());
  torch::Tensor denominator = torch::zeros({}, logits.options());
  for (int64_t j : others) {
    numerator = numerator + p[j] * (logits[class_index] - logits[j]);
    denominator = denominator + p[j];
  }
  return numerator / (denominator + kFinerEpsilon);
}

torch::Tensor cam_map(CamMethod method, const torch::Tensor& activation,
                      const torch::Tensor& gradient, bool eigen_smooth) {
  torch::NoGradGuard no_grad;
  if (!activation.defined() || activation.dim() != 3 || activation.numel() == 0) {
    throw Error(ErrorCode::invalid_argument,
                "CAM activation must be a non-empty KxHxW tensor, got " +
                    (activation.defined() ? shape_string(activation) : std::string("none")));
  }
  const torch::Tensor a = activation.to(torch::kFloat);
  const torch::Tensor g =
      cam_method_uses_gradient(method) ? checked_gradient(activation, gradient) : torch::Tensor();
  // The map as a sum over channels of terms, or EigenCAM of those terms.
  const auto summed = [eigen_smooth](const torch::Tensor& terms) {
    return eigen_smooth ? eigen_cam(terms) : terms.sum(0);
  };
  switch (method) {
    case CamMethod::gradcam:
    case CamMethod::finercam:  // Grad-CAM's weighting of its own score's gradient
      return summed(weighted_terms(g.mean({1, 2}), a));
    case CamMethod::gradcam_plus_plus: {
      const torch::Tensor g2 = g * g;
      const torch::Tensor denominator = 2 * g2 + a.sum({1, 2}, /*keepdim=*/true) * g2 * g;
      const torch::Tensor alpha =
          torch::where(denominator != 0, g2 / denominator, torch::zeros_like(g2));
      return summed(weighted_terms((alpha * torch::relu(g)).sum({1, 2}), a));
    }
    case CamMethod::xgradcam:
      return summed(weighted_terms((a * g).sum({1, 2}) / (a.sum({1, 2}) + kXGradCamEpsilon), a));
    case CamMethod::hirescam:
      return summed(g * a);
    case CamMethod::layercam:
      return summed(torch::relu(g) * a);
    case CamMethod::eigencam:
      return eigen_cam(a);
    case CamMethod::gradcam_elementwise:
      return summed(torch::relu(g * a));
    case CamMethod::eigengradcam:
      return eigen_cam(g * a);
    case CamMethod::fem:
      return fem(a);
    case CamMethod::kpcacam:
      return kpca_cam(a);
    case CamMethod::ablationcam:
    case CamMethod::scorecam:
      throw Error(ErrorCode::invalid_argument,
                  std::string(cam_method_name(method)) + "'s weights come from the network, not from a formula");
  }
  throw Error(ErrorCode::invalid_argument,
              "unknown CAM method value " + std::to_string(static_cast<int>(method)));
}

torch::Tensor weighted_map(const torch::Tensor& weights, const torch::Tensor& activation, bool eigen_smooth) {
  torch::NoGradGuard no_grad;
  const torch::Tensor terms = weighted_terms(weights.to(torch::kFloat), activation.to(torch::kFloat));
  return eigen_smooth ? eigen_cam(terms) : terms.sum(0);
}

bool is_flat(float lo, float hi) {
  const float range = hi - lo;
  return !(range > kFlatRelativeEpsilon * hi) || range < FLT_MIN;
}

NormalizedMap normalize_map(const torch::Tensor& map) {
  torch::NoGradGuard no_grad;
  if (!map.defined() || map.dim() != 2) {
    throw Error(ErrorCode::invalid_argument,
                "a CAM map must be HxW, got " +
                    (map.defined() ? shape_string(map) : std::string("none")));
  }
  NormalizedMap out;
  out.map.height = static_cast<int>(map.size(0));
  out.map.width = static_cast<int>(map.size(1));
  out.map.values.assign(static_cast<size_t>(map.numel()), 0.0f);

  torch::Tensor m = map.to(torch::kCPU, torch::kFloat);
  if (m.numel() == 0 || !torch::isfinite(m).all().item<bool>()) {
    out.flat = true;
    return out;
  }
  m = torch::relu(m);
  const float hi = m.max().item<float>();
  const float lo = m.min().item<float>();
  if (is_flat(lo, hi)) {
    out.flat = true;
    return out;
  }
  m = ((m - lo) / (hi - lo)).contiguous();
  std::copy(m.data_ptr<float>(), m.data_ptr<float>() + m.numel(), out.map.values.begin());
  return out;
}

}  // namespace dermal
