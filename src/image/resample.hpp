#pragma once
#include "dermal/dermal.hpp"
#include "image/window.hpp"

namespace dermal {

// The window of PIL's `image.resize((resized_width, resized_height),
// filter, box)` for 8-bit RGB, byte for byte as Pillow makes it (tested
// against 9.4; 11.1 resizes identically): its 8-bit fixed-point two passes
// for the convolution filters, its affine sampling for nearest, its plain
// crop when the box is whole pixels of the output's size. Only the window's
// pixels (and the source rows and columns they need) are computed. Throws
// Error(invalid_argument) for a window or box that does not fit.
Image resize_like_pillow(const Image& image, ResampleFilter filter, const ResizeWindow& window);

}  // namespace dermal
