#include "heatmap/render.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <limits>
#include <vector>

#include "image/image.hpp"

namespace dermal {
namespace {

// matplotlib's viridis sampled at v = k / 32, sRGB in [0, 1]; linear
// interpolation between these stays within 2/255 of the 256-entry original.
constexpr int kViridisSegments = 32;
constexpr float kViridis[kViridisSegments + 1][3] = {
    {0.2670f, 0.0049f, 0.3294f}, {0.2770f, 0.0502f, 0.3755f}, {0.2823f, 0.0946f, 0.4170f},
    {0.2829f, 0.1354f, 0.4530f}, {0.2789f, 0.1749f, 0.4830f}, {0.2708f, 0.2133f, 0.5066f},
    {0.2593f, 0.2507f, 0.5244f}, {0.2454f, 0.2867f, 0.5370f}, {0.2302f, 0.3213f, 0.5455f},
    {0.2148f, 0.3545f, 0.5510f}, {0.2000f, 0.3864f, 0.5545f}, {0.1861f, 0.4173f, 0.5567f},
    {0.1733f, 0.4474f, 0.5579f}, {0.1613f, 0.4770f, 0.5581f}, {0.1497f, 0.5064f, 0.5573f},
    {0.1384f, 0.5358f, 0.5551f}, {0.1281f, 0.5651f, 0.5509f}, {0.1209f, 0.5945f, 0.5442f},
    {0.1203f, 0.6238f, 0.5343f}, {0.1310f, 0.6529f, 0.5208f}, {0.1554f, 0.6815f, 0.5032f},
    {0.1930f, 0.7096f, 0.4812f}, {0.2415f, 0.7366f, 0.4545f}, {0.2986f, 0.7624f, 0.4230f},
    {0.3629f, 0.7867f, 0.3866f}, {0.4330f, 0.8091f, 0.3453f}, {0.5081f, 0.8292f, 0.2992f},
    {0.5873f, 0.8470f, 0.2489f}, {0.6694f, 0.8622f, 0.1954f}, {0.7529f, 0.8751f, 0.1427f},
    {0.8359f, 0.8861f, 0.1025f}, {0.9166f, 0.8961f, 0.1008f}, {0.9932f, 0.9062f, 0.1439f},
};

// A channel in [0, 1] (clamped) as the nearest byte.
std::uint8_t to_byte(float unit) {
  return static_cast<std::uint8_t>(std::clamp(unit, 0.0f, 1.0f) * 255.0f + 0.5f);
}

// MATLAB's jet: dark blue, blue, cyan, yellow, red, dark red; v in [0, 1].
std::array<std::uint8_t, 3> jet_rgb(float v) {
  const auto channel = [v](float peak) { return 1.5f - std::fabs(4.0f * v - peak); };
  return {to_byte(channel(3.0f)), to_byte(channel(2.0f)), to_byte(channel(1.0f))};
}

// v in [0, 1].
std::array<std::uint8_t, 3> viridis_rgb(float v) {
  const float position = v * kViridisSegments;
  const int k = std::min(static_cast<int>(position), kViridisSegments - 1);
  const float t = position - static_cast<float>(k);
  std::array<std::uint8_t, 3> rgb{};
  for (int c = 0; c < 3; ++c) {
    rgb[c] = to_byte(kViridis[k][c] + t * (kViridis[k + 1][c] - kViridis[k][c]));
  }
  return rgb;
}

std::string size_text(int width, int height) {
  return std::to_string(width) + "x" + std::to_string(height);
}

std::string number_text(float value) {
  std::ostringstream text;
  text << value;
  return text.str();
}

// Throws Error(invalid_argument) unless the map has cells and exactly
// width * height values.
void check_heatmap(const Heatmap& map) {
  if (map.width <= 0 || map.height <= 0) {
    throw Error(ErrorCode::invalid_argument,
                "heatmap is empty (" + size_text(map.width, map.height) + ")");
  }
  const std::size_t expected = static_cast<std::size_t>(map.width) * map.height;
  if (map.values.size() != expected) {
    throw Error(ErrorCode::invalid_argument,
                "heatmap is " + size_text(map.width, map.height) + " but has " +
                    std::to_string(map.values.size()) + " values, not " + std::to_string(expected));
  }
}

// One output position of a bilinear resize along an axis:
// (1 - weight) * in[first] + weight * in[second].
struct Taps {
  int first;
  int second;
  float weight;
};

// PyTorch's align_corners=False sampling: half-pixel centres, sources left of
// the first centre clamped to it, the last input repeated past its centre.
std::vector<Taps> bilinear_taps(int in_size, int out_size) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  std::vector<Taps> taps(static_cast<std::size_t>(out_size));
  for (int i = 0; i < out_size; ++i) {
    const float source = std::max(scale * (static_cast<float>(i) + 0.5f) - 0.5f, 0.0f);
    const int first = std::min(static_cast<int>(source), in_size - 1);
    taps[i] = {first, std::min(first + 1, in_size - 1), source - static_cast<float>(first)};
  }
  return taps;
}

// Throws Error(invalid_argument) unless the placement has pixels and lies
// within a width x height canvas.
void check_placement(const PixelRect& p, int width, int height) {
  if (p.width <= 0 || p.height <= 0 || p.left < 0 || p.top < 0 || p.left + p.width > width ||
      p.top + p.height > height) {
    throw Error(ErrorCode::invalid_argument,
                "a " + size_text(p.width, p.height) + " placement at (" + std::to_string(p.left) + ", " +
                    std::to_string(p.top) + ") does not fit a " + size_text(width, height) + " picture");
  }
}

// (1 - weight) * a + weight * b; exactly a when weight is 0, even if b is not finite.
float blend(float a, float b, float weight) { return weight == 0.0f ? a : (1.0f - weight) * a + weight * b; }

// ReLU that also maps NaN to 0.
float positive(float v) { return v > 0.0f ? v : 0.0f; }

void check_same_size(const Image& photo, int width, int height) {
  if (width != photo.width || height != photo.height)
    throw Error(ErrorCode::invalid_argument,
                "heatmap is " + size_text(width, height) + " but the photo is " + size_text(photo.width, photo.height));
}

using ColourTable = std::array<std::array<std::uint8_t, 3>, 256>;

// The colormap at 256 levels, made once per process.
const ColourTable& colour_table(Colormap colormap) {
  const auto make = [](Colormap map) {
    ColourTable table;
    for (int level = 0; level < 256; ++level) table[level] = colormap_rgb(map, level / 255.0f);
    return table;
  };
  static const ColourTable jet = make(Colormap::jet);
  static const ColourTable viridis = make(Colormap::viridis);
  switch (colormap) {
    case Colormap::jet: return jet;
    case Colormap::viridis: return viridis;
  }
  throw Error(ErrorCode::invalid_argument, "unknown colormap value " + std::to_string(static_cast<int>(colormap)));
}

// The photo with heatmap rows (row(y, line) writes photo.width values in
// [0, 1]) coloured through 256 levels and blended over it in fixed point,
// exact at alpha 0 and 1. Throws Error(invalid_argument) for alpha outside [0, 1].
template <typename Rows>
Image blend_rows(const Image& photo, Colormap colormap, float alpha, Rows&& row) {
  if (!(alpha >= 0.0f && alpha <= 1.0f))
    throw Error(ErrorCode::invalid_argument, "overlay alpha must be in [0, 1], not " + number_text(alpha));
  const ColourTable& table = colour_table(colormap);
  const std::uint32_t weight = static_cast<std::uint32_t>(std::lround(alpha * 256.0f));
  std::vector<float> line(static_cast<std::size_t>(photo.width));
  Image out{photo.width, photo.height, std::vector<std::uint8_t>(photo.rgb.size())};
  for (int y = 0; y < photo.height; ++y) {
    row(y, line.data());
    const std::size_t first = static_cast<std::size_t>(y) * photo.width * 3;
    for (int x = 0; x < photo.width; ++x) {
      const float v = line[x];
      const std::array<std::uint8_t, 3>& colour =
          table[v > 0.0f ? static_cast<int>(std::min(v, 1.0f) * 255.0f + 0.5f) : 0];  // NaN -> 0
      for (std::size_t c = 0; c < 3; ++c) {
        const std::size_t i = first + 3 * static_cast<std::size_t>(x) + c;
        out.rgb[i] = static_cast<std::uint8_t>((photo.rgb[i] * (256 - weight) + colour[c] * weight + 128) >> 8);
      }
    }
  }
  return out;
}

}  // namespace

std::array<std::uint8_t, 3> colormap_rgb(Colormap colormap, float v) {
  const float clamped = std::isnan(v) ? 0.0f : std::clamp(v, 0.0f, 1.0f);
  switch (colormap) {
    case Colormap::jet: return jet_rgb(clamped);
    case Colormap::viridis: return viridis_rgb(clamped);
  }
  throw Error(ErrorCode::invalid_argument,
              "unknown colormap value " + std::to_string(static_cast<int>(colormap)));
}

PlacedHeatmap::PlacedHeatmap(const Heatmap& map, const PixelRect& placement, int width, int height)
    : width_(width), height_(height), placement_(placement) {
  check_heatmap(map);
  check_placement(placement, width, height);
  // Across first: every map row stretched to the placement's width, once.
  const std::vector<Taps> columns = bilinear_taps(map.width, placement.width);
  across_.resize(static_cast<std::size_t>(map.height) * placement.width);
  for (int r = 0; r < map.height; ++r) {
    const float* source = map.values.data() + static_cast<std::size_t>(r) * map.width;
    float* target = across_.data() + static_cast<std::size_t>(r) * placement.width;
    for (int x = 0; x < placement.width; ++x)
      target[x] = blend(source[columns[x].first], source[columns[x].second], columns[x].weight);
  }
  for (const Taps& t : bilinear_taps(map.height, placement.height)) down_.push_back({t.first, t.second, t.weight});
  // The stretched map's range, for the min-max normalisation after ReLU.
  float low = std::numeric_limits<float>::infinity(), high = 0.0f;
  std::vector<float> line(static_cast<std::size_t>(placement.width));
  for (const Tap& tap : down_) {
    const float* upper = across_.data() + static_cast<std::size_t>(tap.first) * placement.width;
    const float* lower = across_.data() + static_cast<std::size_t>(tap.second) * placement.width;
    for (int x = 0; x < placement.width; ++x) {
      const float v = positive(blend(upper[x], lower[x], tap.weight));
      low = std::min(low, v);
      high = std::max(high, v);
    }
  }
  if (high - low > 0.0f && std::isfinite(high - low)) {
    offset_ = low;
    gain_ = 1.0f / (high - low);
  }
}

void PlacedHeatmap::row(int y, float* out) const {
  std::fill(out, out + width_, 0.0f);
  if (y < placement_.top || y >= placement_.top + placement_.height || gain_ == 0.0f) return;
  const Tap& tap = down_[y - placement_.top];
  const float* upper = across_.data() + static_cast<std::size_t>(tap.first) * placement_.width;
  const float* lower = across_.data() + static_cast<std::size_t>(tap.second) * placement_.width;
  float* target = out + placement_.left;
  for (int x = 0; x < placement_.width; ++x)
    target[x] = std::min((positive(blend(upper[x], lower[x], tap.weight)) - offset_) * gain_, 1.0f);
}

Heatmap PlacedHeatmap::full() const {
  Heatmap out{width_, height_, std::vector<float>(static_cast<std::size_t>(width_) * height_)};
  for (int y = 0; y < height_; ++y) row(y, out.values.data() + static_cast<std::size_t>(y) * width_);
  return out;
}

Image render_overlay(const Image& photo, const PlacedHeatmap& heatmap, Colormap colormap, float alpha) {
  check_image(photo, "photo");
  check_same_size(photo, heatmap.width(), heatmap.height());
  return blend_rows(photo, colormap, alpha, [&heatmap](int y, float* line) { heatmap.row(y, line); });
}

Image render_overlay(const Image& photo, const Heatmap& heatmap, Colormap colormap, float alpha) {
  check_image(photo, "photo");
  check_heatmap(heatmap);
  check_same_size(photo, heatmap.width, heatmap.height);
  return blend_rows(photo, colormap, alpha, [&heatmap](int y, float* line) {
    const float* first = heatmap.values.data() + static_cast<std::size_t>(y) * heatmap.width;
    std::copy(first, first + heatmap.width, line);
  });
}

}  // namespace dermal
