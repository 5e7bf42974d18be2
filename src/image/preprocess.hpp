#pragma once
#include <cstdint>
#include <vector>

#include "dermal/dermal.hpp"
#include "image/resample.hpp"

namespace dermal {

// Resizes 8-bit RGB (interleaved) with a bilinear (triangle) filter widened
// by the scale factor when shrinking, so it antialiases like PIL's BILINEAR
// and torch's interpolate(antialias=True). Returns the window as planar float
// channels (CHW) in the 0..255 range. The window's box is not used: it is
// the whole picture.
std::vector<float> resize_bilinear(const Image& image, const ResizeWindow& window);

// Where the model's input window lies: the whole picture stretched, the
// centred crop of the picture resized by its shorter side (as torchvision),
// or the centred box of the input's aspect ratio (as PIL.ImageOps.fit).
ResizeWindow input_window(const Image& image, const ModelDescription& description);

// The model's input for one photo: resize policy, crop, scale, mean/std, as
// a 3 x input_height x input_width planar float buffer. With a resample
// filter, it is (PIL's 8-bit resize * scale - mean) / std in float32, as
// numpy computes it on the app's PIL image; a scale of 1/255 (1/k for a
// whole k) divides by 255 instead, bit for bit as torch's x / 255.
std::vector<float> preprocess(const Image& image, const ModelDescription& description);

}  // namespace dermal
