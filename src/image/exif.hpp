#pragma once
#include <cstddef>
#include <cstdint>

#include "dermal/dermal.hpp"

namespace dermal {

// The Orientation tag (1..8) of a TIFF-structured EXIF block (starting at the
// "II"/"MM" byte order mark); 1 when absent, malformed or out of range.
int exif_orientation(const std::uint8_t* tiff, std::size_t size);

// Turns a picture stored with EXIF orientation 1..8 upright, as a viewer shows it.
Image apply_orientation(Image stored, int orientation);

}  // namespace dermal
