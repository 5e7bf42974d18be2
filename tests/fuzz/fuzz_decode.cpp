// libFuzzer target: arbitrary bytes through decode_image (at most 4M declared
// pixels) and, when they decode, preprocessing to a 64x64 model input with
// each resize policy, by the float resize and by PIL's NEAREST and LANCZOS.
// Only dermal::Error may come out of the library; any other exception, crash
// or sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <optional>

#include "dermal/dermal.hpp"
#include "image/preprocess.hpp"

namespace {

dermal::ModelDescription input_64(dermal::ResizePolicy policy,
                                  std::optional<dermal::ResampleFilter> resample = std::nullopt) {
  dermal::ModelDescription description;
  description.resample = resample;
  description.input_width = 64;
  description.input_height = 64;
  description.resize = policy;
  description.resize_shorter_to = 72;
  return description;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  dermal::DecodeOptions options;
  options.max_pixels = 4'000'000;
  try {
    const dermal::Image image = dermal::decode_image(data, size, options);
    if (image.width < 1 || image.height < 1 || image.rgb.size() != std::size_t(image.width) * image.height * 3)
      __builtin_trap();  // decode_image promised a whole picture
    for (dermal::ResizePolicy policy : {dermal::ResizePolicy::stretch, dermal::ResizePolicy::center_crop})
      if (dermal::preprocess(image, input_64(policy)).size() != 3 * 64 * 64) __builtin_trap();
    for (dermal::ResizePolicy policy :
         {dermal::ResizePolicy::stretch, dermal::ResizePolicy::center_crop, dermal::ResizePolicy::fit})
      for (dermal::ResampleFilter filter : {dermal::ResampleFilter::nearest, dermal::ResampleFilter::lanczos})
        if (dermal::preprocess(image, input_64(policy, filter)).size() != 3 * 64 * 64) __builtin_trap();
  } catch (const dermal::Error&) {
  }
  return 0;
}
