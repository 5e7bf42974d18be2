// libFuzzer target: arbitrary text through parse_description. Only
// dermal::Error(invalid_model) may come out; a description it accepts must
// satisfy the invariants prediction relies on.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dermal/dermal.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const dermal::ModelDescription d = dermal::parse_description(std::string(reinterpret_cast<const char*>(data), size));
    const bool sound = !d.labels.empty() && !d.stages.empty() && !d.cam_layer.empty() && d.input_width >= 1 &&
                       d.input_height >= 1 && d.scale > 0 && d.std[0] > 0 && d.std[1] > 0 && d.std[2] > 0;
    if (!sound) __builtin_trap();
  } catch (const dermal::Error& e) {
    if (e.code() != dermal::ErrorCode::invalid_model) __builtin_trap();
  }
  return 0;
}
