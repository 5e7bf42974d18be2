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

}  // namespace dermal
