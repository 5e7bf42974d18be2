#include "model/faithfulness.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace dermal {

namespace {

struct Neighbour {
  int dy, dx;
  double weight;
};
constexpr std::array<Neighbour, 8> kNeighbours = {{{1, 1, 1.0 / 12}, {0, 1, 1.0 / 6}, {-1, 1, 1.0 / 12},
                                                   {1, -1, 1.0 / 12}, {0, -1, 1.0 / 6}, {-1, -1, 1.0 / 12},
                                                   {1, 0, 1.0 / 6}, {-1, 0, 1.0 / 6}}};

// NumPy's percentile with linear interpolation (its two-sided lerp) of sorted values.
double percentile(const std::vector<float>& sorted, double q) {
  const double position = (static_cast<double>(sorted.size()) - 1.0) * q / 100.0;
  const std::size_t below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, sorted.size() - 1);
  const double t = position - static_cast<double>(below);
  const double a = sorted[below], b = sorted[above];
  return t >= 0.5 ? b - (b - a) * (1.0 - t) : a + (b - a) * t;
}

// The imputation's system over the removed pixels: diagonal[i] x_i − Σ w x_j = rhs_i,
// j over removed neighbours (symmetric, positive definite when a pixel is kept).
struct System {
  std::vector<double> diagonal;
  std::vector<std::int64_t> start;  // CSR rows of the off-diagonal couplings
  std::vector<std::int64_t> column;
  std::vector<double> weight;
};

// Jacobi-preconditioned conjugate gradients from 0.
std::vector<double> solve(const System& system, const std::vector<double>& rhs) {
  const std::size_t n = rhs.size();
  std::vector<double> x(n, 0.0), r = rhs, z(n), p(n), q(n);
  auto dot = [n](const std::vector<double>& a, const std::vector<double>& b) {
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) sum += a[i] * b[i];
    return sum;
  };
  const double stop = kRoadRelativeResidual * std::sqrt(dot(rhs, rhs));
  for (std::size_t i = 0; i < n; ++i) z[i] = r[i] / system.diagonal[i];
  p = z;
  double rz = dot(r, z);
  for (std::size_t iteration = 0; iteration < 4 * n + 100 && std::sqrt(dot(r, r)) > stop; ++iteration) {
    for (std::size_t i = 0; i < n; ++i) {
      double sum = system.diagonal[i] * p[i];
      for (std::int64_t e = system.start[i]; e < system.start[i + 1]; ++e) sum -= system.weight[e] * p[system.column[e]];
      q[i] = sum;
    }
    const double alpha = rz / dot(p, q);
    for (std::size_t i = 0; i < n; ++i) {
      x[i] += alpha * p[i];
      r[i] -= alpha * q[i];
      z[i] = r[i] / system.diagonal[i];
    }
    const double rz_next = dot(r, z);
    const double beta = rz_next / rz;
    rz = rz_next;
    for (std::size_t i = 0; i < n; ++i) p[i] = z[i] + beta * p[i];
  }
  return x;
}

}  // namespace

torch::Tensor map_at_input(const Heatmap& heatmap, int height, int width) {
  torch::NoGradGuard no_grad;
  torch::Tensor m = torch::tensor(heatmap.values).reshape({1, 1, heatmap.height, heatmap.width});
  m = torch::nn::functional::interpolate(
          m, torch::nn::functional::InterpolateFuncOptions()
                 .size(std::vector<int64_t>{height, width})
                 .mode(torch::kBilinear)
                 .align_corners(false))[0][0];
  const float lo = m.min().item<float>(), hi = m.max().item<float>();
  return hi > lo ? ((m - lo) / (hi - lo)).contiguous() : torch::zeros({height, width});
}

torch::Tensor road_remove(const torch::Tensor& input, const torch::Tensor& map, int percent) {
  torch::NoGradGuard no_grad;
  const std::int64_t channels = input.size(0), h = input.size(1), w = input.size(2);
  const torch::Tensor m = map.to(torch::kFloat).contiguous();
  const float* values = m.data_ptr<float>();
  std::vector<float> sorted(values, values + h * w);
  std::sort(sorted.begin(), sorted.end());
  // Compared in float32, as PyTorch compares a float32 tensor with a Python float.
  const float threshold = static_cast<float>(percentile(sorted, 100.0 - percent));

  std::vector<std::int64_t> unknown(static_cast<std::size_t>(h * w), -1);  // pixel -> unknown's index
  std::vector<std::int64_t> removed;
  for (std::int64_t i = 0; i < h * w; ++i)
    if (!(values[i] < threshold)) {
      unknown[i] = static_cast<std::int64_t>(removed.size());
      removed.push_back(i);
    }
  if (removed.size() == static_cast<std::size_t>(h * w)) return torch::zeros_like(input);

  const torch::Tensor source = input.to(torch::kFloat).contiguous();
  const float* pixels = source.data_ptr<float>();
  const std::size_t n = removed.size();
  System system;
  system.diagonal.assign(n, 0.0);
  system.start.assign(n + 1, 0);
  std::vector<double> rhs(n * channels, 0.0);  // channel-major
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t y = removed[i] / w, x = removed[i] % w;
    for (const Neighbour& nb : kNeighbours) {
      const std::int64_t ny = y + nb.dy, nx = x + nb.dx;
      if (ny < 0 || nx < 0 || ny >= h || nx >= w) continue;
      system.diagonal[i] += nb.weight;
      const std::int64_t neighbour = ny * w + nx;
      if (unknown[neighbour] >= 0) {
        system.column.push_back(unknown[neighbour]);
        system.weight.push_back(nb.weight);
      } else {
        for (std::int64_t c = 0; c < channels; ++c) rhs[c * n + i] += nb.weight * pixels[c * h * w + neighbour];
      }
    }
    system.start[i + 1] = static_cast<std::int64_t>(system.column.size());
  }
  torch::Tensor out = source.clone();
  float* filled = out.data_ptr<float>();
  for (std::int64_t c = 0; c < channels; ++c) {
    const std::vector<double> x = solve(system, std::vector<double>(rhs.begin() + c * n, rhs.begin() + (c + 1) * n));
    for (std::size_t i = 0; i < n; ++i) filled[c * h * w + removed[i]] = static_cast<float>(x[i]);
  }
  return out;
}

}  // namespace dermal
