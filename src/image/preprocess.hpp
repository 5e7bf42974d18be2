#pragma once
#include <cstdint>
#include <vector>

#include "dermal/dermal.hpp"

namespace dermal {

// A window of a resized picture: the picture is resized to resized_width x
// resized_height, and only width x height pixels from (left, top) are made.
struct ResizeWindow {
  int resized_width = 0;
  int resized_height = 0;
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
};

// Resizes 8-bit RGB (interleaved) with a bilinear (triangle) filter widened
// by the scale factor when shrinking, so it antialiases like PIL's BILINEAR
// and torch's interpolate(antialias=True). Returns the window as planar float
// channels (CHW) in the 0..255 range.
std::vector<float> resize_bilinear(const Image& image, const ResizeWindow& window);

// Where the model's input window lies: the whole picture stretched, or the
// centred crop of the picture resized by its shorter side (as torchvision).
ResizeWindow input_window(const Image& image, const ModelDescription& description);

// The model's input for one photo: resize policy, crop, scale, mean/std, as
// a 3 x input_height x input_width planar float buffer.
std::vector<float> preprocess(const Image& image, const ModelDescription& description);

}  // namespace dermal
