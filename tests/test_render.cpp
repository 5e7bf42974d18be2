// Colormaps, overlay blending, encoding and heatmap resizing (src/heatmap/render).
#include "catch2.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "heatmap/render.hpp"

// A private, static copy of stb_image to decode what encode_image wrote.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_NO_STDIO
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#include <stb/stb_image.h>

using Catch::Matchers::ContainsSubstring;
using dermal::Colormap;
using dermal::ErrorCode;
using dermal::Heatmap;
using dermal::Image;
using dermal::ImageFormat;
using RGB = std::array<std::uint8_t, 3>;

namespace {

// A smooth colour gradient, which JPEG reproduces closely.
Image gradient_image(int width, int height) {
  Image image{width, height, std::vector<std::uint8_t>(static_cast<std::size_t>(width) * height * 3)};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      std::uint8_t* pixel = &image.rgb[(static_cast<std::size_t>(y) * width + x) * 3];
      pixel[0] = static_cast<std::uint8_t>(255 * x / (width - 1));
      pixel[1] = static_cast<std::uint8_t>(255 * y / (height - 1));
      pixel[2] = 128;
    }
  }
  return image;
}

// Values from 0 at the top-left to 1 at the bottom-right.
Heatmap ramp_heatmap(int width, int height) {
  Heatmap map{width, height, std::vector<float>(static_cast<std::size_t>(width) * height)};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      map.values[static_cast<std::size_t>(y) * width + x] =
          static_cast<float>(x + y) / static_cast<float>(width + height - 2);
    }
  }
  return map;
}

// Relative luminance (Rec. 709 weights on linearised sRGB).
double luminance(const RGB& rgb) {
  const auto linear = [](std::uint8_t byte) {
    const double c = byte / 255.0;
    return c <= 0.04045 ? c / 12.92 : std::pow((c + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * linear(rgb[0]) + 0.7152 * linear(rgb[1]) + 0.0722 * linear(rgb[2]);
}

// Whether each channel of a is within tolerance of b's.
bool within(const RGB& a, const RGB& b, int tolerance) {
  for (std::size_t c = 0; c < 3; ++c) {
    if (std::abs(static_cast<int>(a[c]) - static_cast<int>(b[c])) > tolerance) return false;
  }
  return true;
}

// Runs f and returns the code of the dermal::Error it throws.
// The placed map's resize, written out plainly as the tests' reference:
// output pixel x samples the input at (x + 0.5) * in / out - 0.5, clamped to
// the map, bilinearly (torch's interpolate, align_corners=False).
Heatmap resize_reference(const Heatmap& map, int width, int height) {
  const auto sample = [](int out, int size, int in) {
    const double position = std::clamp((out + 0.5) * in / size - 0.5, 0.0, in - 1.0);
    const int low = static_cast<int>(position);
    return std::make_tuple(low, std::min(low + 1, in - 1), static_cast<float>(position - low));
  };
  Heatmap out{width, height, std::vector<float>(static_cast<std::size_t>(width) * height)};
  for (int y = 0; y < height; ++y) {
    const auto [top, bottom, down] = sample(y, height, map.height);
    for (int x = 0; x < width; ++x) {
      const auto [left, right, across] = sample(x, width, map.width);
      const auto at = [&](int row, int column) { return map.values[static_cast<std::size_t>(row) * map.width + column]; };
      const float upper = at(top, left) + (at(top, right) - at(top, left)) * across;
      const float lower = at(bottom, left) + (at(bottom, right) - at(bottom, left)) * across;
      out.values[static_cast<std::size_t>(y) * width + x] = upper + (lower - upper) * down;
    }
  }
  return out;
}

template <typename F>
ErrorCode error_code_of(F&& f) {
  try {
    f();
  } catch (const dermal::Error& e) {
    return e.code();
  }
  FAIL("no dermal::Error thrown");
  return ErrorCode::ok;
}

struct DecodedImage {
  int width = 0;
  int height = 0;
  std::unique_ptr<unsigned char, void (*)(void*)> rgb{nullptr, stbi_image_free};
};

DecodedImage decode(const std::vector<std::uint8_t>& bytes) {
  DecodedImage image;
  int channels = 0;
  image.rgb.reset(stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &image.width,
                                        &image.height, &channels, 3));
  REQUIRE(image.rgb != nullptr);
  return image;
}

std::uint32_t big_endian_u32(const std::vector<std::uint8_t>& bytes, std::size_t offset) {
  return static_cast<std::uint32_t>(bytes[offset]) << 24 | static_cast<std::uint32_t>(bytes[offset + 1]) << 16 |
         static_cast<std::uint32_t>(bytes[offset + 2]) << 8 | static_cast<std::uint32_t>(bytes[offset + 3]);
}

}  // namespace

TEST_CASE("parse_colormap accepts jet and viridis and names them when refusing", "[render]") {
  CHECK(dermal::parse_colormap("jet") == Colormap::jet);
  CHECK(dermal::parse_colormap("viridis") == Colormap::viridis);
  CHECK(error_code_of([] { dermal::parse_colormap("magma"); }) == ErrorCode::invalid_argument);
  CHECK_THROWS_WITH(dermal::parse_colormap("magma"),
                    ContainsSubstring("magma") && ContainsSubstring("jet") && ContainsSubstring("viridis"));
}

TEST_CASE("viridis runs from dark purple to yellow with rising luminance", "[render]") {
  CHECK(dermal::colormap_rgb(Colormap::viridis, 0.0f) == RGB{68, 1, 84});      // #440154
  CHECK(dermal::colormap_rgb(Colormap::viridis, 1.0f) == RGB{253, 231, 37});   // #fde725
  CHECK(within(dermal::colormap_rgb(Colormap::viridis, 0.5f), RGB{33, 145, 140}, 1));  // #21918c

  double previous = -1.0;
  for (int i = 0; i <= 64; ++i) {
    const double current = luminance(dermal::colormap_rgb(Colormap::viridis, i / 64.0f));
    INFO("v = " << i << "/64");
    CHECK(current > previous);
    previous = current;
  }
}

TEST_CASE("jet runs from dark blue through green to dark red", "[render]") {
  CHECK(dermal::colormap_rgb(Colormap::jet, 0.0f) == RGB{0, 0, 128});
  CHECK(dermal::colormap_rgb(Colormap::jet, 0.5f) == RGB{128, 255, 128});
  CHECK(dermal::colormap_rgb(Colormap::jet, 1.0f) == RGB{128, 0, 0});
  CHECK(dermal::colormap_rgb(Colormap::jet, 0.125f) == RGB{0, 0, 255});
  CHECK(dermal::colormap_rgb(Colormap::jet, 0.875f) == RGB{255, 0, 0});
}

TEST_CASE("colormap_rgb clamps its argument and maps NaN to 0", "[render]") {
  for (const Colormap colormap : {Colormap::jet, Colormap::viridis}) {
    const RGB low = dermal::colormap_rgb(colormap, 0.0f);
    const RGB high = dermal::colormap_rgb(colormap, 1.0f);
    CHECK(dermal::colormap_rgb(colormap, -3.0f) == low);
    CHECK(dermal::colormap_rgb(colormap, 7.0f) == high);
    CHECK(dermal::colormap_rgb(colormap, std::numeric_limits<float>::quiet_NaN()) == low);
    CHECK(dermal::colormap_rgb(colormap, std::numeric_limits<float>::infinity()) == high);
  }
  CHECK(error_code_of([] { dermal::colormap_rgb(static_cast<Colormap>(7), 0.5f); }) ==
        ErrorCode::invalid_argument);
}

TEST_CASE("render_overlay blends the coloured map over the photo", "[render]") {
  const Image photo = gradient_image(13, 7);
  const Heatmap map = ramp_heatmap(13, 7);

  SECTION("alpha 0 gives the photo") {
    const Image out = dermal::render_overlay(photo, map, Colormap::jet, 0.0f);
    CHECK(out.width == photo.width);
    CHECK(out.height == photo.height);
    CHECK(out.rgb == photo.rgb);
  }
  SECTION("alpha 1 gives the coloured map") {
    for (const Colormap colormap : {Colormap::jet, Colormap::viridis}) {
      const Image out = dermal::render_overlay(photo, map, colormap, 1.0f);
      REQUIRE(out.rgb.size() == photo.rgb.size());
      for (std::size_t i = 0; i < map.values.size(); ++i) {
        // The overlay colours the map through 256 levels.
        const RGB colour = dermal::colormap_rgb(colormap, std::round(map.values[i] * 255.0f) / 255.0f);
        INFO("pixel " << i);
        CHECK(RGB{out.rgb[3 * i], out.rgb[3 * i + 1], out.rgb[3 * i + 2]} == colour);
      }
    }
  }
  SECTION("alpha 0.25 weighs a quarter colour, three quarters photo") {
    const Image grey{1, 1, {100, 100, 100}};
    const Heatmap zero{1, 1, {0.0f}};
    // jet(0) is (0, 0, 128): 0.75 * 100 + 0.25 * (0, 0, 128) = (75, 75, 107).
    CHECK(dermal::render_overlay(grey, zero, Colormap::jet, 0.25f).rgb ==
          std::vector<std::uint8_t>{75, 75, 107});
  }
}

TEST_CASE("render_overlay refuses mismatched or malformed input", "[render]") {
  const Image photo = gradient_image(8, 6);
  const Heatmap map = ramp_heatmap(8, 6);
  const auto overlay_code = [](const Image& p, const Heatmap& m, float alpha) {
    return error_code_of([&] { dermal::render_overlay(p, m, Colormap::viridis, alpha); });
  };

  CHECK(overlay_code(photo, ramp_heatmap(6, 8), 0.5f) == ErrorCode::invalid_argument);
  CHECK(overlay_code(photo, ramp_heatmap(8, 5), 0.5f) == ErrorCode::invalid_argument);
  CHECK(overlay_code(photo, map, -0.01f) == ErrorCode::invalid_argument);
  CHECK(overlay_code(photo, map, 1.01f) == ErrorCode::invalid_argument);
  CHECK(overlay_code(photo, map, std::numeric_limits<float>::quiet_NaN()) == ErrorCode::invalid_argument);
  CHECK(overlay_code(Image{}, Heatmap{}, 0.5f) == ErrorCode::invalid_argument);

  Image short_photo = photo;
  short_photo.rgb.pop_back();
  CHECK(overlay_code(short_photo, map, 0.5f) == ErrorCode::invalid_argument);
  Heatmap short_map = map;
  short_map.values.pop_back();
  CHECK(overlay_code(photo, short_map, 0.5f) == ErrorCode::invalid_argument);
  CHECK_THROWS_WITH(dermal::render_overlay(photo, ramp_heatmap(4, 3), Colormap::jet, 0.5f),
                    ContainsSubstring("4x3") && ContainsSubstring("8x6"));
  CHECK_THROWS_WITH(dermal::render_overlay(photo, map, Colormap::jet, 1.5f), ContainsSubstring("1.5"));
}

TEST_CASE("encode_image writes JPEG that decodes to the picture", "[render]") {
  const Image image = gradient_image(40, 24);
  const std::vector<std::uint8_t> jpeg = dermal::encode_image(image, ImageFormat::jpeg, 95);
  REQUIRE(jpeg.size() > 4);
  CHECK(jpeg[0] == 0xFF);
  CHECK(jpeg[1] == 0xD8);
  CHECK(jpeg[2] == 0xFF);
  CHECK(jpeg[jpeg.size() - 2] == 0xFF);
  CHECK(jpeg[jpeg.size() - 1] == 0xD9);

  const DecodedImage decoded = decode(jpeg);
  REQUIRE(decoded.width == image.width);
  REQUIRE(decoded.height == image.height);
  double total_error = 0;
  for (std::size_t i = 0; i < image.rgb.size(); ++i) {
    total_error += std::abs(static_cast<int>(decoded.rgb.get()[i]) - static_cast<int>(image.rgb[i]));
  }
  CHECK(total_error / static_cast<double>(image.rgb.size()) < 3.0);

  CHECK(dermal::encode_image(image, ImageFormat::jpeg, 10).size() < jpeg.size());
}

TEST_CASE("encode_image writes PNG that decodes to exactly the picture", "[render]") {
  const Image image = gradient_image(37, 21);
  const std::vector<std::uint8_t> png = dermal::encode_image(image, ImageFormat::png);
  const std::vector<std::uint8_t> signature{0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  REQUIRE(png.size() > 24);
  CHECK(std::vector<std::uint8_t>(png.begin(), png.begin() + 8) == signature);
  CHECK(std::string(png.begin() + 12, png.begin() + 16) == "IHDR");
  CHECK(big_endian_u32(png, 16) == 37);
  CHECK(big_endian_u32(png, 20) == 21);

  const DecodedImage decoded = decode(png);
  REQUIRE(decoded.width == image.width);
  REQUIRE(decoded.height == image.height);
  CHECK(std::vector<std::uint8_t>(decoded.rgb.get(), decoded.rgb.get() + image.rgb.size()) == image.rgb);
}

TEST_CASE("encode_image refuses bad quality and malformed images", "[render]") {
  const Image image = gradient_image(8, 8);
  const auto encode_code = [](const Image& i, ImageFormat format, int quality) {
    return error_code_of([&] { dermal::encode_image(i, format, quality); });
  };
  CHECK(encode_code(image, ImageFormat::jpeg, 0) == ErrorCode::invalid_argument);
  CHECK(encode_code(image, ImageFormat::jpeg, 101) == ErrorCode::invalid_argument);
  CHECK(encode_code(Image{}, ImageFormat::png, 90) == ErrorCode::invalid_argument);
  CHECK(encode_code(Image{2, 2, {1, 2, 3}}, ImageFormat::jpeg, 90) == ErrorCode::invalid_argument);
  CHECK(encode_code(image, static_cast<ImageFormat>(9), 90) == ErrorCode::invalid_argument);
  // PNG has no quality setting, so the JPEG quality is not checked for it.
  CHECK_FALSE(dermal::encode_image(image, ImageFormat::png, 0).empty());
}

TEST_CASE("the test's bilinear reference matches values worked out by hand", "[render]") {
  // Half-pixel centres: output x samples input (x + 0.5) / 2 - 0.5, clamped
  // to [0, 1] -> -0.25 (0), 0.25, 0.75, 1.25 (1).
  const Heatmap row{2, 1, {0.0f, 1.0f}};
  const Heatmap wide = resize_reference(row, 4, 1);
  CHECK(wide.width == 4);
  CHECK(wide.height == 1);
  CHECK(wide.values == std::vector<float>{0.0f, 0.25f, 0.75f, 1.0f});

  // Bilinear in both axes: value = 2 * row position + column position.
  const Heatmap square{2, 2, {0.0f, 1.0f, 2.0f, 3.0f}};
  const Heatmap big = resize_reference(square, 4, 4);
  const float positions[4] = {0.0f, 0.25f, 0.75f, 1.0f};
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 4; ++x) {
      INFO("x " << x << " y " << y);
      CHECK(big.values[y * 4 + x] == Approx(2.0f * positions[y] + positions[x]));
    }
  }

  const Heatmap same = resize_reference(ramp_heatmap(5, 3), 5, 3);
  CHECK(same.values == ramp_heatmap(5, 3).values);

  const Heatmap constant = resize_reference(Heatmap{3, 2, std::vector<float>(6, 0.4f)}, 11, 17);
  REQUIRE(constant.values.size() == 11 * 17);
  for (const float value : constant.values) CHECK(value == Approx(0.4f).margin(1e-6));
}

TEST_CASE("a placed heatmap is the resized map on its placement, renormalised to [0, 1], zero elsewhere", "[render]") {
  Heatmap map = ramp_heatmap(5, 4);
  for (float& v : map.values) v = 0.2f + 0.5f * v;  // stretched, its range is not [0, 1]
  const dermal::PixelRect placement{3, 2, 11, 7};
  const Heatmap resized = resize_reference(map, placement.width, placement.height);
  const auto [low, high] = std::minmax_element(resized.values.begin(), resized.values.end());
  REQUIRE(*low > 0.0f);
  const Heatmap placed = dermal::PlacedHeatmap(map, placement, 17, 12).full();
  REQUIRE(placed.width == 17);
  REQUIRE(placed.height == 12);
  for (int y = 0; y < 12; ++y)
    for (int x = 0; x < 17; ++x) {
      const bool inside = x >= 3 && x < 14 && y >= 2 && y < 9;
      INFO("x " << x << ", y " << y);
      const float expected = inside ? (resized.values[(y - 2) * 11 + (x - 3)] - *low) / (*high - *low) : 0.0f;
      CHECK(placed.values[y * 17 + x] == Approx(expected).margin(1e-6));
    }
  CHECK(*std::max_element(placed.values.begin(), placed.values.end()) == 1.0f);
  for (const dermal::PixelRect outside : {dermal::PixelRect{7, 2, 11, 7}, dermal::PixelRect{3, 6, 11, 7},
                                          dermal::PixelRect{-1, 0, 4, 4}, dermal::PixelRect{0, 0, 0, 4}})
    CHECK(error_code_of([&] { dermal::PlacedHeatmap(map, outside, 17, 12); }) == ErrorCode::invalid_argument);
  const Heatmap constant = dermal::PlacedHeatmap(Heatmap{2, 2, std::vector<float>(4, 0.5f)}, placement, 17, 12).full();
  CHECK(*std::max_element(constant.values.begin(), constant.values.end()) == 0.0f);  // no contrast: all zeros
}

TEST_CASE("an overlay made from the placed map row by row equals the one from the whole map", "[render]") {
  const Image photo = gradient_image(17, 12);
  Heatmap map = ramp_heatmap(5, 4);
  map.values[6] = std::numeric_limits<float>::quiet_NaN();  // counts as 0, and only where it falls
  for (const dermal::PixelRect placement : {dermal::PixelRect{3, 2, 11, 7}, dermal::PixelRect{0, 0, 17, 12}}) {
    const dermal::PlacedHeatmap placed(map, placement, 17, 12);
    const Image whole = dermal::render_overlay(photo, placed.full(), Colormap::viridis, 0.6f);
    CHECK(dermal::render_overlay(photo, placed, Colormap::viridis, 0.6f).rgb == whole.rgb);
  }
}

TEST_CASE("the test's bilinear reference matches PyTorch's interpolate", "[render]") {
  // Written by tools/make_render_fixtures.py.
  std::ifstream fixture(std::string(DERMAL_FIXTURES) + "/resize_heatmap.txt");
  REQUIRE(fixture);
  const auto read_map = [&fixture](int width, int height) {
    Heatmap map{width, height, std::vector<float>(static_cast<std::size_t>(width) * height)};
    for (float& value : map.values) REQUIRE(fixture >> value);
    return map;
  };

  int cases = 0;
  std::string line;
  while (fixture >> std::ws && fixture.peek() == '#') std::getline(fixture, line);
  int in_height = 0, in_width = 0, out_height = 0, out_width = 0;
  while (fixture >> in_height >> in_width >> out_height >> out_width) {
    const Heatmap input = read_map(in_width, in_height);
    const Heatmap expected = read_map(out_width, out_height);
    const Heatmap actual = resize_reference(input, out_width, out_height);
    REQUIRE(actual.width == out_width);
    REQUIRE(actual.height == out_height);
    for (std::size_t i = 0; i < expected.values.size(); ++i) {
      INFO(in_height << "x" << in_width << " -> " << out_height << "x" << out_width << ", value " << i);
      CHECK(std::abs(actual.values[i] - expected.values[i]) <= 1e-5f);
    }
    ++cases;
  }
  CHECK(cases == 2);
}
