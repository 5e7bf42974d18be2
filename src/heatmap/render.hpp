// Where a heatmap leaves: the map stretched onto the photo and coloured over
// it (no LibTorch). render_overlay is declared in dermal.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "dermal/dermal.hpp"
#include "image/window.hpp"

namespace dermal {

// The sRGB colour of v under the colormap; v is clamped to [0, 1] and NaN
// counts as 0. Throws Error(invalid_argument) for a value outside the enum.
std::array<std::uint8_t, 3> colormap_rgb(Colormap colormap, float v);

// A map stretched onto its placement on a photo (bilinear, half-pixel
// centres, clamped at the borders: torch.nn.functional.interpolate with
// mode="bilinear", align_corners=False, no antialiasing), then
// ReLU'd and min-max normalised over the placement, so that its values span
// exactly [0, 1] unless the map is constant; zero outside the placement.
// Rows are made on demand from the map's rows stretched across once: no
// photo-sized map exists unless full() is called.
class PlacedHeatmap {
 public:
  // Throws Error(invalid_argument) for an empty or inconsistent map or a
  // placement that does not fit a width x height photo.
  PlacedHeatmap(const Heatmap& map, const PixelRect& placement, int width, int height);

  int width() const { return width_; }
  int height() const { return height_; }
  // Writes photo row y (width() values) to out.
  void row(int y, float* out) const;
  // The whole photo-sized map.
  Heatmap full() const;

 private:
  int width_;
  int height_;
  PixelRect placement_;
  std::vector<float> across_;  // every map row stretched across: map height x placement width
  struct Tap {
    int first;
    int second;
    float weight;
  };
  std::vector<Tap> down_;      // per placement row: the two stretched rows and the weight between them
  float offset_ = 0.0f;        // normalised = max(v - offset, 0) * gain
  float gain_ = 0.0f;
};

// The photo with the placed map coloured over it, made row by row.
// Throws Error(invalid_argument) for a malformed photo, a photo whose size
// differs from the map's, or alpha outside [0, 1].
Image render_overlay(const Image& photo, const PlacedHeatmap& heatmap, Colormap colormap, float alpha);

}  // namespace dermal
