#pragma once
#include "dermal/dermal.hpp"

namespace dermal {

// A window of a resized picture: the part of the picture inside the source
// box is resized to resized_width x resized_height, and only width x height
// pixels from (left, top) of that are made.
struct ResizeWindow {
  int resized_width = 0;
  int resized_height = 0;
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
  // The source box in the picture's pixels: Pillow's `box` argument, which
  // Pillow holds as float. The whole picture unless the policy is "fit".
  float box_left = 0;
  float box_top = 0;
  float box_right = 0;
  float box_bottom = 0;
};

// The window of PIL's `image.resize((resized_width, resized_height),
// filter, box)` for 8-bit RGB, byte for byte as Pillow makes it (tested
// against 9.4; 11.1 resizes identically): its 8-bit fixed-point two passes
// for the convolution filters, its affine sampling for nearest, its plain
// crop when the box is whole pixels of the output's size. Only the window's
// pixels (and the source rows and columns they need) are computed. Throws
// Error(invalid_argument) for a window or box that does not fit.
Image resize_like_pillow(const Image& image, ResampleFilter filter, const ResizeWindow& window);

}  // namespace dermal
