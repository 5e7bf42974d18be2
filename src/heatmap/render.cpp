#include "heatmap/render.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "heatmap/stb_write.h"
#include "turbojpeg_handle.hpp"

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

// matplotlib's viridis sampled at v = k / 32, sRGB in [0, 1]; linear
// interpolation between these stays within 2/255 of the 256-entry original.
constexpr int kViridisSegments = 32;
constexpr float kViridis[kViridisSegments + 1][3] = {
    {0.2670f, 0.0049f, 0.3294f}, {0.2770f, 0.0502f, 0.3755f}, {0.2823f, 0.0946f, 0.4170f},
    {0.2829f, 0.1354f, 0.4530f}, {0.2789f, 0.1749f, 0.4830f}, {0.2708f, 0.2133f, 0.5066f},
    {0.2593f, 0.2507f, 0.5244f}, {0.2454f, 0.2867f, 0.5370f}, {0.2302f, 0.3213f, 0.5455f},
    {0.2148f, 0.3545f, 0.5510f}, {0.2000f, 0.3864f, 0.5545f}, {0.1861f, 0.4173f, 0.5567f},
    {0.1733f, 0.4474f, 0.5579f}, {0.1613f, 0.4770f, 0.5581f}, {0.1497f, 0.5064f, 0.5573f},
    {0.1384f, 0.5358f, 0.5551f}, {0.1281f, 0.5651f, 0.5509f}, {0.1209f, 0.5945f, 0.5442f},
    {0.1203f, 0.6238f, 0.5343f}, {0.1310f, 0.6529f, 0.5208f}, {0.1554f, 0.6815f, 0.5032f},
    {0.1930f, 0.7096f, 0.4812f}, {0.2415f, 0.7366f, 0.4545f}, {0.2986f, 0.7624f, 0.4230f},
    {0.3629f, 0.7867f, 0.3866f}, {0.4330f, 0.8091f, 0.3453f}, {0.5081f, 0.8292f, 0.2992f},
    {0.5873f, 0.8470f, 0.2489f}, {0.6694f, 0.8622f, 0.1954f}, {0.7529f, 0.8751f, 0.1427f},
    {0.8359f, 0.8861f, 0.1025f}, {0.9166f, 0.8961f, 0.1008f}, {0.9932f, 0.9062f, 0.1439f},
};

// JPEG stores each side in 16 bits.
constexpr int kMaxJpegSide = 65535;
// stb_image_write holds the filtered PNG rows and their deflate output in
// int-sized buffers; this leaves room for deflate's worst-case growth.
constexpr std::uint64_t kMaxPngFilteredBytes = INT_MAX / 2;

// Above this quality the chroma planes keep full resolution (4:4:4);
// at or below it they are halved in both directions (4:2:0).
constexpr int kMaxSubsampledQuality = 90;

// A channel in [0, 1] (clamped) as the nearest byte.
std::uint8_t to_byte(float unit) {
  return static_cast<std::uint8_t>(std::clamp(unit, 0.0f, 1.0f) * 255.0f + 0.5f);
}

// MATLAB's jet: dark blue, blue, cyan, yellow, red, dark red; v in [0, 1].
std::array<std::uint8_t, 3> jet_rgb(float v) {
  const auto channel = [v](float peak) { return 1.5f - std::fabs(4.0f * v - peak); };
  return {to_byte(channel(3.0f)), to_byte(channel(2.0f)), to_byte(channel(1.0f))};
}

// v in [0, 1].
std::array<std::uint8_t, 3> viridis_rgb(float v) {
  const float position = v * kViridisSegments;
  const int k = std::min(static_cast<int>(position), kViridisSegments - 1);
  const float t = position - static_cast<float>(k);
  std::array<std::uint8_t, 3> rgb{};
  for (int c = 0; c < 3; ++c) {
    rgb[c] = to_byte(kViridis[k][c] + t * (kViridis[k + 1][c] - kViridis[k][c]));
  }
  return rgb;
}

std::string size_text(int width, int height) {
  return std::to_string(width) + "x" + std::to_string(height);
}

std::string number_text(float value) {
  std::ostringstream text;
  text << value;
  return text.str();
}

// Throws Error(invalid_argument) unless the image has pixels and exactly
// width * height * 3 bytes.
void check_image(const Image& image, const std::string& what) {
  if (image.width <= 0 || image.height <= 0) {
    throw Error(ErrorCode::invalid_argument,
                what + " is empty (" + size_text(image.width, image.height) + ")");
  }
  const std::size_t expected = static_cast<std::size_t>(image.width) * image.height * 3;
  if (image.rgb.size() != expected) {
    throw Error(ErrorCode::invalid_argument,
                what + " is " + size_text(image.width, image.height) + " but has " +
                    std::to_string(image.rgb.size()) + " bytes of RGB, not " + std::to_string(expected));
  }
}

// Throws Error(invalid_argument) unless the map has cells and exactly
// width * height values.
void check_heatmap(const Heatmap& map) {
  if (map.width <= 0 || map.height <= 0) {
    throw Error(ErrorCode::invalid_argument,
                "heatmap is empty (" + size_text(map.width, map.height) + ")");
  }
  const std::size_t expected = static_cast<std::size_t>(map.width) * map.height;
  if (map.values.size() != expected) {
    throw Error(ErrorCode::invalid_argument,
                "heatmap is " + size_text(map.width, map.height) + " but has " +
                    std::to_string(map.values.size()) + " values, not " + std::to_string(expected));
  }
}

// One output position of a bilinear resize along an axis:
// (1 - weight) * in[first] + weight * in[second].
struct Taps {
  int first;
  int second;
  float weight;
};

// PyTorch's align_corners=False sampling: half-pixel centres, sources left of
// the first centre clamped to it, the last input repeated past its centre.
std::vector<Taps> bilinear_taps(int in_size, int out_size) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  std::vector<Taps> taps(static_cast<std::size_t>(out_size));
  for (int i = 0; i < out_size; ++i) {
    const float source = std::max(scale * (static_cast<float>(i) + 0.5f) - 0.5f, 0.0f);
    const int first = std::min(static_cast<int>(source), in_size - 1);
    taps[i] = {first, std::min(first + 1, in_size - 1), source - static_cast<float>(first)};
  }
  return taps;
}

// Throws Error(invalid_argument) unless the placement has pixels and lies
// within a width x height canvas.
void check_placement(const Placement& p, int width, int height) {
  if (p.width <= 0 || p.height <= 0 || p.left < 0 || p.top < 0 || p.left + p.width > width ||
      p.top + p.height > height) {
    throw Error(ErrorCode::invalid_argument,
                "a " + size_text(p.width, p.height) + " placement at (" + std::to_string(p.left) + ", " +
                    std::to_string(p.top) + ") does not fit a " + size_text(width, height) + " picture");
  }
}

// A map stretched bilinearly over a placement, one output row at a time.
class Stretch {
 public:
  Stretch(const Heatmap& map, const Placement& placement)
      : map_(map), columns_(bilinear_taps(map.width, placement.width)),
        rows_(bilinear_taps(map.height, placement.height)) {}

  // Writes output row y (0 at the placement's top) to out[0, placement width).
  void row(int y, float* out) const {
    const Taps& row = rows_[y];
    const float* top = map_.values.data() + static_cast<std::size_t>(row.first) * map_.width;
    const float* bottom = map_.values.data() + static_cast<std::size_t>(row.second) * map_.width;
    for (std::size_t x = 0; x < columns_.size(); ++x) {
      const Taps& column = columns_[x];
      const float upper = blend(top[column.first], top[column.second], column.weight);
      const float lower = blend(bottom[column.first], bottom[column.second], column.weight);
      out[x] = blend(upper, lower, row.weight);
    }
  }

 private:
  // (1 - weight) * a + weight * b; exactly a when weight is 0, even if b is not finite.
  static float blend(float a, float b, float weight) {
    return weight == 0.0f ? a : (1.0f - weight) * a + weight * b;
  }

  const Heatmap& map_;
  std::vector<Taps> columns_;
  std::vector<Taps> rows_;
};

struct TurboJpegBufferFree {
  void operator()(unsigned char* buffer) const { tjFree(buffer); }
};

// Baseline JPEG by libjpeg-turbo; throws Error on failure, leaks nothing.
std::vector<std::uint8_t> encode_jpeg(const Image& image, int quality) {
  const TurboJpegHandle encoder(tjInitCompress());
  if (!encoder) throw Error(ErrorCode::out_of_memory, "cannot start a JPEG encoder: " + std::string(tjGetErrorStr2(nullptr)));
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  const int subsampling = quality > kMaxSubsampledQuality ? TJSAMP_444 : TJSAMP_420;
  const int status = tjCompress2(encoder.get(), image.rgb.data(), image.width, 0, image.height, TJPF_RGB, &jpeg, &size,
                                 subsampling, quality, 0);
  const std::unique_ptr<unsigned char, TurboJpegBufferFree> owned(jpeg);
  if (status != 0) {
    throw Error(ErrorCode::internal, "cannot encode a " + size_text(image.width, image.height) +
                                         " image as JPEG: " + tjGetErrorStr2(encoder.get()));
  }
  return std::vector<std::uint8_t>(jpeg, jpeg + size);
}

// PNG by stb_image_write; throws Error on failure.
std::vector<std::uint8_t> encode_png(const Image& image) {
  if ((static_cast<std::uint64_t>(image.width) * 3 + 1) * image.height > kMaxPngFilteredBytes) {
    throw Error(ErrorCode::image_too_large,
                "a " + size_text(image.width, image.height) + " image is too large to encode as PNG");
  }
  EncodedBytes out;
  const int encoded = stbw_write_png(append_encoded, &out, image.width, image.height, image.rgb.data());
  if (out.out_of_memory) {
    throw Error(ErrorCode::out_of_memory, "no memory for the encoded " + size_text(image.width, image.height) + " image");
  }
  if (!encoded) {
    throw Error(ErrorCode::internal, "cannot encode a " + size_text(image.width, image.height) + " image as PNG");
  }
  return std::move(out.bytes);
}

}  // namespace

std::array<std::uint8_t, 3> colormap_rgb(Colormap colormap, float v) {
  const float clamped = std::isnan(v) ? 0.0f : std::clamp(v, 0.0f, 1.0f);
  switch (colormap) {
    case Colormap::jet: return jet_rgb(clamped);
    case Colormap::viridis: return viridis_rgb(clamped);
  }
  throw Error(ErrorCode::invalid_argument,
              "unknown colormap value " + std::to_string(static_cast<int>(colormap)));
}

Colormap parse_colormap(const std::string& name) {
  if (name == "jet") return Colormap::jet;
  if (name == "viridis") return Colormap::viridis;
  throw Error(ErrorCode::invalid_argument, "unknown colormap \"" + name + "\"; expected jet or viridis");
}

Heatmap resize_heatmap(const Heatmap& map, int width, int height) {
  if (width <= 0 || height <= 0) {
    throw Error(ErrorCode::invalid_argument,
                "cannot resize a heatmap to " + size_text(width, height));
  }
  return place_heatmap(map, {0, 0, width, height}, width, height);
}

Heatmap place_heatmap(const Heatmap& map, const Placement& placement, int width, int height) {
  check_heatmap(map);
  check_placement(placement, width, height);
  const Stretch stretch(map, placement);
  Heatmap out{width, height, std::vector<float>(static_cast<std::size_t>(width) * height, 0.0f)};
  for (int y = placement.top; y < placement.top + placement.height; ++y)
    stretch.row(y - placement.top, out.values.data() + static_cast<std::size_t>(y) * width + placement.left);
  return out;
}

Image render_overlay(const Image& photo, const Heatmap& heatmap, Colormap colormap, float alpha) {
  check_image(photo, "photo");
  check_heatmap(heatmap);
  if (heatmap.width != photo.width || heatmap.height != photo.height) {
    throw Error(ErrorCode::invalid_argument,
                "heatmap is " + size_text(heatmap.width, heatmap.height) + " but the photo is " +
                    size_text(photo.width, photo.height));
  }
  return render_placed_overlay(photo, heatmap, {0, 0, photo.width, photo.height}, colormap, alpha);
}

Image render_placed_overlay(const Image& photo, const Heatmap& map, const Placement& placement, Colormap colormap,
                            float alpha) {
  check_image(photo, "photo");
  check_heatmap(map);
  check_placement(placement, photo.width, photo.height);
  if (!(alpha >= 0.0f && alpha <= 1.0f)) {
    throw Error(ErrorCode::invalid_argument, "overlay alpha must be in [0, 1], not " + number_text(alpha));
  }
  // The map is coloured through 256 levels; the blend is fixed-point, exact at alpha 0 and 1.
  std::array<std::array<std::uint8_t, 3>, 256> table;
  for (int level = 0; level < 256; ++level) table[level] = colormap_rgb(colormap, level / 255.0f);
  const std::uint32_t weight = static_cast<std::uint32_t>(std::lround(alpha * 256.0f));
  const Stretch stretch(map, placement);
  std::vector<float> line(static_cast<std::size_t>(photo.width), 0.0f);  // zero outside the placement
  Image out{photo.width, photo.height, std::vector<std::uint8_t>(photo.rgb.size())};
  for (int y = 0; y < photo.height; ++y) {
    const bool inside = y >= placement.top && y < placement.top + placement.height;
    if (inside) stretch.row(y - placement.top, line.data() + placement.left);
    else std::fill(line.begin() + placement.left, line.begin() + placement.left + placement.width, 0.0f);
    const std::size_t first = static_cast<std::size_t>(y) * photo.width * 3;
    for (int x = 0; x < photo.width; ++x) {
      const float v = line[x];
      const int level = v > 0.0f ? static_cast<int>(std::min(v, 1.0f) * 255.0f + 0.5f) : 0;  // NaN -> 0
      const std::array<std::uint8_t, 3>& colour = table[level];
      for (std::size_t c = 0; c < 3; ++c) {
        const std::size_t i = first + 3 * static_cast<std::size_t>(x) + c;
        out.rgb[i] = static_cast<std::uint8_t>((photo.rgb[i] * (256 - weight) + colour[c] * weight + 128) >> 8);
      }
    }
  }
  return out;
}

std::vector<std::uint8_t> encode_image(const Image& image, ImageFormat format, int jpeg_quality) {
  check_image(image, "image");
  switch (format) {
    case ImageFormat::jpeg:
      if (jpeg_quality < 1 || jpeg_quality > 100) {
        throw Error(ErrorCode::invalid_argument,
                    "JPEG quality must be in 1..100, not " + std::to_string(jpeg_quality));
      }
      if (image.width > kMaxJpegSide || image.height > kMaxJpegSide) {
        throw Error(ErrorCode::image_too_large,
                    "a " + size_text(image.width, image.height) +
                        " image does not fit in JPEG (at most 65535 pixels a side)");
      }
      return encode_jpeg(image, jpeg_quality);
    case ImageFormat::png:
      return encode_png(image);
  }
  throw Error(ErrorCode::invalid_argument,
              "unknown image format value " + std::to_string(static_cast<int>(format)));
}

}  // namespace dermal
