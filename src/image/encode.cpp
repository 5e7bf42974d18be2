// Encoding a picture (an overlay) as JPEG or PNG.
#include <fmt/format.h>

#include <climits>
#include <new>

#include "image/image.hpp"
#include "image/jpeg.hpp"
#include "image/stb_codecs.h"

namespace {

// What stb_image_write has produced so far; out_of_memory once an append failed.
struct EncodedBytes {
  std::vector<std::uint8_t> bytes;
  bool out_of_memory = false;
};

}  // namespace

extern "C" {
// stb_image_write's sink: appends to the EncodedBytes behind context; never throws.
static void append_encoded(void* context, void* data, int size) {
  auto& out = *static_cast<EncodedBytes*>(context);
  if (out.out_of_memory) return;
  try {
    const auto* first = static_cast<const std::uint8_t*>(data);
    out.bytes.insert(out.bytes.end(), first, first + size);
  } catch (const std::bad_alloc&) {
    out.out_of_memory = true;
  }
}
}

namespace dermal {

namespace {

// JPEG stores each side in 16 bits.
constexpr int kMaxJpegSide = 65535;
// stb_image_write holds the filtered PNG rows and their deflate output in
// int-sized buffers; this leaves room for deflate's worst-case growth.
constexpr std::uint64_t kMaxPngFilteredBytes = INT_MAX / 2;

// PNG by stb_image_write; throws Error on failure.
std::vector<std::uint8_t> encode_png(const Image& image) {
  if ((static_cast<std::uint64_t>(image.width) * 3 + 1) * image.height > kMaxPngFilteredBytes)
    throw Error(ErrorCode::image_too_large,
                fmt::format("a {}x{} image is too large to encode as PNG", image.width, image.height));
  EncodedBytes out;
  const int encoded = stbw_write_png(append_encoded, &out, image.width, image.height, image.rgb.data());
  if (out.out_of_memory)
    throw Error(ErrorCode::out_of_memory, fmt::format("no memory for the encoded {}x{} image", image.width, image.height));
  if (!encoded)
    throw Error(ErrorCode::internal, fmt::format("cannot encode a {}x{} image as PNG", image.width, image.height));
  return std::move(out.bytes);
}

}  // namespace

std::vector<std::uint8_t> encode_image(const Image& image, ImageFormat format, int jpeg_quality) {
  check_image(image, "image");
  switch (format) {
    case ImageFormat::jpeg:
      if (jpeg_quality < 1 || jpeg_quality > 100)
        throw Error(ErrorCode::invalid_argument, fmt::format("jpeg_quality must be within 1..100, not {}", jpeg_quality));
      if (image.width > kMaxJpegSide || image.height > kMaxJpegSide)
        throw Error(ErrorCode::image_too_large,
                    fmt::format("a {}x{} image does not fit in JPEG (at most 65535 pixels a side)", image.width,
                                image.height));
      return encode_jpeg(image, jpeg_quality);
    case ImageFormat::png:
      return encode_png(image);
  }
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown image format value {}", static_cast<int>(format)));
}

}  // namespace dermal
