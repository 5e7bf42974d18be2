// JPEG by libjpeg-turbo (TurboJPEG API): decoding and encoding side by side.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dermal/dermal.hpp"

namespace dermal {

// Decodes JPEG data to 8-bit RGB as PIL does (accurate integer IDCT, smooth
// chroma upsampling). The decoder must read the width x height that the
// container walk found, or the data is refused: the pixel limit was checked
// on that size. Data decoded with a warning (e.g. extraneous bytes) is
// accepted, as browsers and PIL accept it. Throws Error(invalid_image).
Image decode_jpeg(const std::uint8_t* data, std::size_t size, std::int64_t width, std::int64_t height);

// Baseline JPEG, 4:4:4 above quality 90 and 4:2:0 at or below it. Throws
// Error on failure and leaks nothing.
std::vector<std::uint8_t> encode_jpeg(const Image& image, int quality);

}  // namespace dermal
