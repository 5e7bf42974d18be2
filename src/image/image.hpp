// Internal checks and codecs' entry points on dermal::Image.
#pragma once

#include <string>

#include "dermal/dermal.hpp"

namespace dermal {

// Throws Error(invalid_argument) naming `what` unless the image has pixels
// and exactly width * height * 3 bytes.
void check_image(const Image& image, const std::string& what);

}  // namespace dermal
