#include "heatmap/cam.hpp"

#include <algorithm>
#include <cfloat>
#include <limits>
#include <string>

namespace dermal {
namespace {

struct MethodName {
  CamMethod method;
  const char* name;
};

constexpr MethodName kMethodNames[] = {
    {CamMethod::gradcam, "gradcam"},   {CamMethod::gradcam_plus_plus, "gradcam++"},
    {CamMethod::xgradcam, "xgradcam"}, {CamMethod::hirescam, "hirescam"},
    {CamMethod::layercam, "layercam"}, {CamMethod::eigencam, "eigencam"},
};

std::string shape_string(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "x" : "") + std::to_string(t.size(i));
  return s + "]";
}

// Σ_k w_k A_k for per-channel weights w (K).
torch::Tensor weighted_sum(const torch::Tensor& weights, const torch::Tensor& a) {
  return (weights.view({-1, 1, 1}) * a).sum(0);
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

CamMethod parse_cam_method(const std::string& name) {
  std::string valid;
  for (const MethodName& m : kMethodNames) {
    if (name == m.name) return m.method;
    valid += std::string(valid.empty() ? "" : ", ") + "\"" + m.name + "\"";
  }
  throw Error(ErrorCode::invalid_argument,
              "unknown CAM method \"" + name + "\"; valid methods: " + valid);
}

const char* cam_method_name(CamMethod method) {
  for (const MethodName& m : kMethodNames) {
    if (m.method == method) return m.name;
  }
  throw Error(ErrorCode::invalid_argument,
              "unknown CAM method value " + std::to_string(static_cast<int>(method)));
}

torch::Tensor cam_map(CamMethod method, const torch::Tensor& activation,
                      const torch::Tensor& gradient) {
  torch::NoGradGuard no_grad;
  if (!activation.defined() || activation.dim() != 3 || activation.numel() == 0) {
    throw Error(ErrorCode::invalid_argument,
                "CAM activation must be a non-empty KxHxW tensor, got " +
                    (activation.defined() ? shape_string(activation) : std::string("none")));
  }
  const torch::Tensor a = activation.to(torch::kFloat);
  const torch::Tensor g = method == CamMethod::eigencam ? torch::Tensor()
                                                        : checked_gradient(activation, gradient);
  switch (method) {
    case CamMethod::gradcam:
      return weighted_sum(g.mean({1, 2}), a);
    case CamMethod::gradcam_plus_plus: {
      const torch::Tensor g2 = g * g;
      const torch::Tensor denominator = 2 * g2 + a.sum({1, 2}, /*keepdim=*/true) * g2 * g;
      const torch::Tensor alpha =
          torch::where(denominator != 0, g2 / denominator, torch::zeros_like(g2));
      return weighted_sum((alpha * torch::relu(g)).sum({1, 2}), a);
    }
    case CamMethod::xgradcam:
      return weighted_sum((a * g).sum({1, 2}) / (a.sum({1, 2}) + kXGradCamEpsilon), a);
    case CamMethod::hirescam:
      return (g * a).sum(0);
    case CamMethod::layercam:
      return (torch::relu(g) * a).sum(0);
    case CamMethod::eigencam:
      return eigen_cam(a);
  }
  throw Error(ErrorCode::invalid_argument,
              "unknown CAM method value " + std::to_string(static_cast<int>(method)));
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
  const float range = hi - lo;
  if (!(range > kFlatRelativeEpsilon * hi) || range < FLT_MIN) {
    out.flat = true;
    return out;
  }
  m = ((m - lo) / range).contiguous();
  std::copy(m.data_ptr<float>(), m.data_ptr<float>() + m.numel(), out.map.values.begin());
  return out;
}

}  // namespace dermal
