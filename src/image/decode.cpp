#include <fmt/format.h>

#include <climits>
#include <cstring>
#include <memory>
#include <utility>

#include "dermal/dermal.hpp"
#include "image/exif.hpp"
#include "image/image.hpp"
#include "image/jpeg.hpp"
#include "image/stb_codecs.h"

namespace dermal {

namespace {

enum class Format { jpeg, png, bmp };

const char* format_name(Format format) {
  switch (format) {
    case Format::jpeg: return "JPEG";
    case Format::png: return "PNG";
    case Format::bmp: return "BMP";
  }
  return "image";
}

bool starts_with(const std::uint8_t* data, std::size_t size, const char* magic, std::size_t length,
                 std::size_t offset = 0) {
  return size >= offset + length && std::memcmp(data + offset, magic, length) == 0;
}

// Names the format from the first bytes; refuses formats dermal does not decode.
Format sniff_format(const std::uint8_t* data, std::size_t size) {
  if (starts_with(data, size, "\xFF\xD8\xFF", 3)) return Format::jpeg;
  if (starts_with(data, size, "\x89PNG\r\n\x1A\n", 8)) return Format::png;
  if (starts_with(data, size, "BM", 2)) return Format::bmp;
  const char* other = nullptr;
  if (starts_with(data, size, "GIF8", 4)) other = "GIF";
  else if (starts_with(data, size, "RIFF", 4) && starts_with(data, size, "WEBP", 4, 8)) other = "WebP";
  else if (starts_with(data, size, "II*\0", 4) || starts_with(data, size, "MM\0*", 4)) other = "TIFF";
  else if (starts_with(data, size, "ftyp", 4, 4)) other = "HEIF/AVIF/MP4";
  else if (starts_with(data, size, "8BPS", 4)) other = "PSD";
  if (other != nullptr)
    throw Error(ErrorCode::unsupported_image, fmt::format("{} images are not supported; send JPEG, PNG or BMP", other));
  throw Error(ErrorCode::invalid_image, "not an image: the data starts with no JPEG, PNG or BMP signature");
}

// What the container says before any pixel is decoded.
struct Header {
  std::int64_t width = 0;
  std::int64_t height = 0;
  const std::uint8_t* exif = nullptr;  // TIFF-structured EXIF block, if any
  std::size_t exif_size = 0;
};

std::uint32_t big_endian_16(const std::uint8_t* p) { return p[0] << 8 | p[1]; }
std::uint32_t big_endian_32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3];
}
std::uint32_t little_endian_32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | p[1] << 8 | p[2] << 16 | std::uint32_t(p[3]) << 24;
}

Error truncated(Format format, const std::string& where) {
  return Error(ErrorCode::invalid_image, fmt::format("truncated {} data: it ends {}", format_name(format), where));
}

// Walks the JPEG marker segments from SOI to EOI, reading the frame size and
// EXIF block. Refuses truncated data and the JPEG flavours dermal does not decode.
Header read_jpeg(const std::uint8_t* data, std::size_t size) {
  Header header;
  std::size_t pos = 2;
  while (true) {
    while (pos < size && data[pos] == 0xFF && pos + 1 < size && data[pos + 1] == 0xFF) ++pos;  // fill bytes
    if (pos + 2 > size) throw truncated(Format::jpeg, "before the end-of-image marker");
    if (data[pos] != 0xFF)
      throw Error(ErrorCode::invalid_image, fmt::format("corrupt JPEG data: no marker at byte {}", pos));
    const std::uint8_t marker = data[pos + 1];
    pos += 2;
    if (marker == 0xD9) return header;                                 // EOI
    if ((marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) continue;  // no length
    if (pos + 2 > size) throw truncated(Format::jpeg, "inside a segment header");
    const std::size_t length = big_endian_16(data + pos);
    if (length < 2) throw Error(ErrorCode::invalid_image, "corrupt JPEG data: a segment length below 2");
    if (pos + length > size) throw truncated(Format::jpeg, "inside a segment");
    const std::uint8_t* body = data + pos + 2;
    const std::size_t body_size = length - 2;
    const bool frame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (frame) {
      if (marker >= 0xC9) throw Error(ErrorCode::unsupported_image, "arithmetic-coded JPEG is not supported");
      if (marker == 0xC3 || marker >= 0xC5)
        throw Error(ErrorCode::unsupported_image, "lossless or hierarchical JPEG is not supported");
      if (body_size < 6) throw Error(ErrorCode::invalid_image, "corrupt JPEG data: a frame header is too short");
      if (header.width != 0 || header.height != 0)
        throw Error(ErrorCode::invalid_image, "corrupt JPEG data: more than one frame header");
      if (body[5] == 4)
        throw Error(ErrorCode::unsupported_image, "CMYK/YCCK JPEG is not supported; convert the photo to RGB");
      header.height = big_endian_16(body + 1);
      header.width = big_endian_16(body + 3);
    }
    if (marker == 0xE1 && header.exif == nullptr && body_size > 6 && std::memcmp(body, "Exif\0\0", 6) == 0) {
      header.exif = body + 6;
      header.exif_size = body_size - 6;
    }
    pos += length;
    if (marker == 0xDA) {  // entropy-coded data runs to the next marker that is not a stuffed byte or restart
      while (pos + 1 < size && !(data[pos] == 0xFF && data[pos + 1] != 0x00 &&
                                 !(data[pos + 1] >= 0xD0 && data[pos + 1] <= 0xD7)))
        ++pos;
      if (pos + 1 >= size) throw truncated(Format::jpeg, "inside the compressed image data");
    }
  }
}

// Decodes PNG or BMP data to 8-bit RGB with stb_image.
Image decode_with_stb(const std::uint8_t* data, std::size_t size, Format format) {
  int width = 0, height = 0;
  std::unique_ptr<unsigned char, void (*)(void*)> pixels_rgb(
      stbd_load_rgb(data, static_cast<int>(size), &width, &height), stbd_free);
  if (!pixels_rgb)
    throw Error(ErrorCode::invalid_image,
                fmt::format("could not decode the {} data: {}", format_name(format), stbd_failure_reason()));
  Image image;
  image.width = width;
  image.height = height;
  image.rgb.assign(pixels_rgb.get(), pixels_rgb.get() + static_cast<std::size_t>(width) * height * 3);
  return image;
}

// A 4-byte chunk type as text; bytes outside printable ASCII become '?'.
std::string printable_name(const std::uint8_t* type) {
  std::string name(4, '?');
  for (int i = 0; i < 4; ++i)
    if (type[i] >= 0x20 && type[i] < 0x7F) name[i] = static_cast<char>(type[i]);
  return name;
}

// Walks the PNG chunks to IEND, reading IHDR's size and the eXIf block.
Header read_png(const std::uint8_t* data, std::size_t size) {
  Header header;
  if (size < 33 || std::memcmp(data + 12, "IHDR", 4) != 0)
    throw Error(ErrorCode::invalid_image, "corrupt PNG data: it does not start with an IHDR chunk");
  header.width = big_endian_32(data + 16);
  header.height = big_endian_32(data + 20);
  std::size_t pos = 8;
  while (true) {
    if (pos + 8 > size) throw truncated(Format::png, "before the IEND chunk");
    const std::size_t length = big_endian_32(data + pos);
    const std::uint8_t* type = data + pos + 4;
    if (length > size || pos + 12 + length > size)
      throw truncated(Format::png, fmt::format("inside the '{}' chunk", printable_name(type)));
    if (std::memcmp(type, "IEND", 4) == 0) return header;
    if (std::memcmp(type, "eXIf", 4) == 0) {
      header.exif = data + pos + 8;
      header.exif_size = length;
    }
    pos += 12 + length;
  }
}

// Reads a BMP's size; refuses compressed BMPs and checks that the BMP holds
// all the rows it declares (stb_image would pad missing rows with black).
Header read_bmp(const std::uint8_t* data, std::size_t size) {
  Header header;
  if (size < 26) throw truncated(Format::bmp, "inside the header");
  const std::uint32_t pixel_offset = little_endian_32(data + 10);
  const std::uint32_t header_size = little_endian_32(data + 14);
  std::int64_t width = 0, height = 0;
  std::uint32_t bits = 0;
  if (header_size < 40) {  // OS/2 1.x header: 16-bit sizes, never compressed
    width = data[18] | data[19] << 8;
    height = data[20] | data[21] << 8;
    bits = data[24] | data[25] << 8;
  } else {
    if (size < 34) throw truncated(Format::bmp, "inside the header");
    width = static_cast<std::int32_t>(little_endian_32(data + 18));
    height = static_cast<std::int32_t>(little_endian_32(data + 22));
    bits = data[28] | data[29] << 8;
    const std::uint32_t compression = little_endian_32(data + 30);
    if (compression > 6)
      throw Error(ErrorCode::invalid_image, fmt::format("corrupt BMP data: unknown compression type {}", compression));
    if (compression != 0 && compression != 3)  // RLE, JPEG, PNG or alpha bit fields
      throw Error(ErrorCode::unsupported_image,
                  fmt::format("compressed BMP (compression type {}) is not supported", compression));
  }
  header.width = width;
  header.height = height < 0 ? -height : height;
  if (width <= 0 || height == 0 || bits == 0) return header;  // refused below with its own reason
  const std::uint64_t row_bytes = ((static_cast<std::uint64_t>(bits) * width + 31) / 32) * 4;
  if (pixel_offset > size || row_bytes > (size - pixel_offset) / static_cast<std::uint64_t>(header.height))
    throw truncated(Format::bmp, "before the last pixel row");
  return header;
}

}  // namespace

void check_image(const Image& image, const std::string& what) {
  if (image.width <= 0 || image.height <= 0)
    throw Error(ErrorCode::invalid_argument, fmt::format("{} is empty ({}x{})", what, image.width, image.height));
  const std::size_t expected = static_cast<std::size_t>(image.width) * image.height * 3;
  if (image.rgb.size() != expected)
    throw Error(ErrorCode::invalid_argument, fmt::format("{} is {}x{} but has {} bytes of RGB, not {}", what,
                                                         image.width, image.height, image.rgb.size(), expected));
}

Image decode_image(const std::uint8_t* data, std::size_t size, const DecodeOptions& options) {
  if (data == nullptr && size > 0) throw Error(ErrorCode::invalid_argument, "image data is NULL but its size is not 0");
  if (size == 0) throw Error(ErrorCode::invalid_image, "empty image data (0 bytes)");
  if (size > static_cast<std::size_t>(INT_MAX))
    throw Error(ErrorCode::image_too_large, fmt::format("image data of {} bytes is over the 2 GiB limit", size));
  const Format format = sniff_format(data, size);
  Header header;
  switch (format) {
    case Format::jpeg: header = read_jpeg(data, size); break;
    case Format::png: header = read_png(data, size); break;
    case Format::bmp: header = read_bmp(data, size); break;
  }
  if (header.width <= 0 || header.height <= 0)
    throw Error(ErrorCode::invalid_image,
                fmt::format("{} declares an empty {}x{} picture", format_name(format), header.width, header.height));
  const std::uint64_t pixels = static_cast<std::uint64_t>(header.width) * static_cast<std::uint64_t>(header.height);
  if (pixels > options.max_pixels)
    throw Error(ErrorCode::image_too_large,
                fmt::format("{} declares {}x{} = {} pixels, over the limit of {}", format_name(format), header.width,
                            header.height, pixels, options.max_pixels));
  Image stored = format == Format::jpeg ? decode_jpeg(data, size, header.width, header.height) : decode_with_stb(data, size, format);
  return apply_orientation(std::move(stored), exif_orientation(header.exif, header.exif_size));
}

}  // namespace dermal
