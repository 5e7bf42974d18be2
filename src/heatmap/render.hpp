// Where a heatmap leaves: colouring, resizing and encoding (no LibTorch).
// render_overlay, encode_image and parse_colormap are declared in dermal.hpp.
#pragma once

#include <array>
#include <cstdint>

#include "dermal/dermal.hpp"

namespace dermal {

// The sRGB colour of v under the colormap; v is clamped to [0, 1] and NaN
// counts as 0. Throws Error(invalid_argument) for a value outside the enum.
std::array<std::uint8_t, 3> colormap_rgb(Colormap colormap, float v);

// Bilinear resize with half-pixel centres, clamped at the borders: equal to
// torch.nn.functional.interpolate(mode="bilinear", align_corners=False)
// without antialiasing. Throws Error(invalid_argument) for an empty or
// inconsistent map or a size below 1.
Heatmap resize_heatmap(const Heatmap& map, int width, int height);

// A rectangle of whole pixels on a photo, where a heatmap lies.
struct Placement {
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
};

// A width x height map: `map` resized (as resize_heatmap) onto `placement`,
// zero outside it. Throws Error(invalid_argument) for an empty or
// inconsistent map or a placement that does not fit.
Heatmap place_heatmap(const Heatmap& map, const Placement& placement, int width, int height);

// The photo blended with place_heatmap(map, placement, photo size), made row
// by row: no photo-sized map is ever held. Throws as render_overlay does.
Image render_placed_overlay(const Image& photo, const Heatmap& map, const Placement& placement, Colormap colormap,
                            float alpha);

}  // namespace dermal
