#include "image/exif.hpp"

namespace dermal {

namespace {

struct TiffReader {
  const std::uint8_t* data;
  std::size_t size;
  bool little_endian;

  bool has(std::size_t offset, std::size_t length) const {
    return offset <= size && length <= size - offset;
  }
  std::uint32_t u16(std::size_t offset) const {
    const std::uint8_t* p = data + offset;
    return little_endian ? (p[0] | p[1] << 8) : (p[0] << 8 | p[1]);
  }
  std::uint32_t u32(std::size_t offset) const {
    const std::uint8_t* p = data + offset;
    return little_endian ? (std::uint32_t(p[0]) | p[1] << 8 | p[2] << 16 | std::uint32_t(p[3]) << 24)
                         : (std::uint32_t(p[0]) << 24 | p[1] << 16 | p[2] << 8 | std::uint32_t(p[3]));
  }
};

constexpr std::uint32_t kOrientationTag = 0x0112;
constexpr std::uint32_t kTypeShort = 3;

}  // namespace

int exif_orientation(const std::uint8_t* tiff, std::size_t size) {
  if (tiff == nullptr || size < 8) return 1;
  TiffReader reader{tiff, size, tiff[0] == 'I'};
  const bool known_order = (tiff[0] == 'I' && tiff[1] == 'I') || (tiff[0] == 'M' && tiff[1] == 'M');
  if (!known_order || reader.u16(2) != 42) return 1;
  const std::size_t ifd = reader.u32(4);
  if (!reader.has(ifd, 2)) return 1;
  const std::size_t entries = reader.u16(ifd);
  for (std::size_t i = 0; i < entries; ++i) {
    const std::size_t entry = ifd + 2 + i * 12;
    if (!reader.has(entry, 12)) return 1;
    if (reader.u16(entry) != kOrientationTag) continue;
    if (reader.u16(entry + 2) != kTypeShort || reader.u32(entry + 4) < 1) return 1;
    const int value = static_cast<int>(reader.u16(entry + 8));
    return value >= 1 && value <= 8 ? value : 1;
  }
  return 1;
}

Image apply_orientation(Image stored, int orientation) {
  if (orientation <= 1 || orientation > 8) return stored;  // moved, not copied
  const int w = stored.width, h = stored.height;
  const bool swaps_axes = orientation >= 5;
  Image upright;
  upright.width = swaps_axes ? h : w;
  upright.height = swaps_axes ? w : h;
  upright.rgb.resize(stored.rgb.size());
  for (int y = 0; y < upright.height; ++y) {
    for (int x = 0; x < upright.width; ++x) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = w - 1 - x; break;                      // mirrored
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;      // rotated 180
        case 4: sy = h - 1 - y; break;                      // flipped
        case 5: sx = y; sy = x; break;                      // transposed
        case 6: sx = y; sy = h - 1 - x; break;              // needs 90 clockwise
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;      // transversed
        case 8: sx = w - 1 - y; sy = x; break;              // needs 90 counter-clockwise
      }
      const std::uint8_t* from = &stored.rgb[(static_cast<std::size_t>(sy) * w + sx) * 3];
      std::uint8_t* to = &upright.rgb[(static_cast<std::size_t>(y) * upright.width + x) * 3];
      to[0] = from[0];
      to[1] = from[1];
      to[2] = from[2];
    }
  }
  return upright;
}

}  // namespace dermal
