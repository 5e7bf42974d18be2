#include <torch/torch.h>

#include "catch2.hpp"

#include <fstream>
#include <iterator>
#include <random>
#include <sstream>

#include "dermal/dermal.hpp"
#include "image/preprocess.hpp"
#include "image/resample.hpp"
#include "read_bytes.hpp"

using dermal::ErrorCode;

namespace {

const std::string kFixtures = DERMAL_FIXTURES;

// A picture from tests/fixtures/images.
std::vector<std::uint8_t> read_image(const std::string& name) { return read_bytes(kFixtures + "/images/" + name); }

dermal::Image decode_fixture(const std::string& name) {
  const std::vector<std::uint8_t> bytes = read_image(name);
  return dermal::decode_image(bytes.data(), bytes.size());
}

// A fixture text file: one header line, then the numbers.
struct FloatFixture {
  std::string header;
  std::vector<float> values;
};

FloatFixture read_floats(const std::string& name) {
  std::ifstream file(kFixtures + "/" + name);
  REQUIRE(file);
  FloatFixture fixture;
  std::getline(file, fixture.header);
  float value;
  while (file >> value) fixture.values.push_back(value);
  return fixture;
}

ErrorCode decode_error(const std::vector<std::uint8_t>& bytes, std::string* message = nullptr,
                       dermal::DecodeOptions options = {}) {
  try {
    dermal::decode_image(bytes.data(), bytes.size(), options);
  } catch (const dermal::Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  return ErrorCode::ok;
}

dermal::ModelDescription description_for(const std::string& header) {
  std::istringstream words(header);
  std::string policy;
  dermal::ModelDescription d;
  words >> d.input_width >> d.input_height >> policy;
  d.resize = policy == "stretch" ? dermal::ResizePolicy::stretch : dermal::ResizePolicy::center_crop;
  if (d.resize == dermal::ResizePolicy::center_crop) words >> d.resize_shorter_to;
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
  for (int c = 0; c < 3; ++c) {
    d.mean[c] = mean[c];
    d.std[c] = std[c];
  }
  return d;
}

}  // namespace

TEST_CASE("EXIF orientations 1 to 8 come out upright", "[image][exif]") {
  const dermal::Image upright = decode_fixture("upright.png");
  REQUIRE(upright.width == 6);
  REQUIRE(upright.height == 4);
  for (int k = 1; k <= 8; ++k) {
    INFO("orientation " << k);
    const dermal::Image shown = decode_fixture("orientation_" + std::to_string(k) + ".png");
    CHECK(shown.width == upright.width);
    CHECK(shown.height == upright.height);
    CHECK(shown.rgb == upright.rgb);
  }
}

TEST_CASE("a phone JPEG with orientation 6 matches what PIL shows", "[image][exif]") {
  const dermal::Image shown = decode_fixture("orientation_6.jpg");
  const dermal::Image expected = decode_fixture("orientation_6_shown.png");
  REQUIRE(shown.width == 64);
  REQUIRE(shown.height == 48);
  // Both decode with libjpeg-turbo's defaults, so every pixel is the same.
  CHECK(shown.rgb == expected.rgb);
}

TEST_CASE("grey, alpha, palette, 16-bit and BMP pixels become RGB as PIL converts them", "[image]") {
  for (const std::string name : {"gray_png", "gray_alpha_png", "rgba_png", "palette_png", "rgb_bmp", "gray16_png"}) {
    INFO(name);
    const std::string source = name.substr(0, name.rfind('_')) + "." + name.substr(name.rfind('_') + 1);
    const dermal::Image decoded = decode_fixture(source);
    const dermal::Image expected = decode_fixture("expected_" + name + ".png");
    CHECK(decoded.width == expected.width);
    CHECK(decoded.height == expected.height);
    CHECK(decoded.rgb == expected.rgb);
  }
  CHECK(decode_fixture("progressive.jpg").width == 9);
  CHECK(decode_fixture("rgb.jpg").height == 7);
}

TEST_CASE("resize and normalisation equal torchvision's on the same photo", "[image][preprocess]") {
  const dermal::Image photo = decode_fixture("photo_37x23.png");
  for (const std::string name : {"shrink", "enlarge", "crop", "crop_odd"}) {
    INFO(name);
    const FloatFixture expected = read_floats("preprocess_" + name + ".txt");
    const std::vector<float> input = dermal::preprocess(photo, description_for(expected.header));
    REQUIRE(input.size() == expected.values.size());
    float worst = 0;
    for (std::size_t i = 0; i < input.size(); ++i) worst = std::max(worst, std::abs(input[i] - expected.values[i]));
    // Both compute in float32 with the same filter; 1e-4 leaves room for summation order only.
    CHECK(worst < 1e-4f);
  }
}

// torchvision's ToTensor + Normalize on the 8-bit pixels of PIL's resize, in
// LibTorch: (torch.from_numpy(x) / 255 - mean) / std, planar.
torch::Tensor torchvision_input(dermal::Image resized, const dermal::ModelDescription& d) {
  const torch::Tensor x =
      torch::from_blob(resized.rgb.data(), {resized.height, resized.width, 3}, torch::kUInt8).permute({2, 0, 1});
  const torch::Tensor mean = torch::tensor({d.mean[0], d.mean[1], d.mean[2]}).view({3, 1, 1});
  const torch::Tensor std = torch::tensor({d.std[0], d.std[1], d.std[2]}).view({3, 1, 1});
  return ((x.to(torch::kFloat32) / 255 - mean) / std).contiguous();
}

TEST_CASE("a scale of 1/255 gives torch's x / 255 bit for bit", "[image][preprocess]") {
  dermal::Image every_value{16, 16, std::vector<std::uint8_t>(16 * 16 * 3)};  // 0..255 in each channel
  for (std::size_t i = 0; i < every_value.rgb.size(); ++i) every_value.rgb[i] = static_cast<std::uint8_t>(i / 3 + 85 * (i % 3));
  const std::vector<std::pair<std::string, dermal::Image>> photos = {{"photo_37x23.png", decode_fixture("photo_37x23.png")},
                                                                     {"every value", every_value}};
  for (const auto& [name, photo] : photos) {
    for (const bool imagenet : {true, false}) {
      INFO(name << (imagenet ? ", ImageNet mean and std" : ", mean 0 and std 1: x / 255 alone"));
      dermal::ModelDescription d = description_for(name == "every value" ? "16 16 stretch" : "64 48 stretch");
      d.resample = dermal::ResampleFilter::bilinear;
      REQUIRE(d.scale == static_cast<float>(1.0 / 255.0));  // what the exporters write
      if (!imagenet) {
        for (int c = 0; c < 3; ++c) {
          d.mean[c] = 0;
          d.std[c] = 1;
        }
      }
      std::vector<float> input = dermal::preprocess(photo, d);
      const torch::Tensor expected =
          torchvision_input(dermal::resize_like_pillow(photo, *d.resample, dermal::input_window(photo, d)), d);
      const torch::Tensor actual = torch::from_blob(input.data(), {3, d.input_height, d.input_width});
      CHECK(torch::equal(actual, expected));
    }
  }
  // The multiplication it replaces is not the same: v * float(1/255) != v / 255 for many v.
  int differing = 0;
  for (int v = 0; v < 256; ++v) differing += static_cast<float>(v) * (1.0f / 255.0f) != static_cast<float>(v) / 255.0f;
  CHECK(differing > 50);
}

TEST_CASE("resize is within one grey level of PIL's 8-bit BILINEAR", "[image][preprocess]") {
  const dermal::Image photo = decode_fixture("photo_37x23.png");
  const FloatFixture pil = read_floats("resize_pil_16x12.txt");
  dermal::ResizeWindow window;
  window.width = window.resized_width = 16;
  window.height = window.resized_height = 12;
  const std::vector<float> resized = dermal::resize_bilinear(photo, window);
  REQUIRE(resized.size() == pil.values.size());
  // PIL rounds to 8 bits after each of its two passes: at most 0.5 + 0.5 levels.
  for (std::size_t i = 0; i < resized.size(); ++i) REQUIRE(std::abs(resized[i] - pil.values[i]) <= 1.0f + 1e-3f);
}

TEST_CASE("bad image data gets its own clear error", "[image][errors]") {
  std::string message;
  CHECK(decode_error({}, &message) == ErrorCode::invalid_image);
  CHECK_THAT(message, Catch::Matchers::ContainsSubstring("empty"));

  std::mt19937 random(7);
  std::vector<std::uint8_t> noise(4096);
  for (auto& byte : noise) byte = static_cast<std::uint8_t>(random());
  CHECK(decode_error(noise, &message) == ErrorCode::invalid_image);
  CHECK_THAT(message, Catch::Matchers::ContainsSubstring("not an image"));

  const std::string text = "hello, this is not a photo";
  CHECK(decode_error({text.begin(), text.end()}) == ErrorCode::invalid_image);
  const std::string gif = "GIF89a\x01\x00\x01\x00";
  CHECK(decode_error({gif.begin(), gif.end()}, &message) == ErrorCode::unsupported_image);
  CHECK_THAT(message, Catch::Matchers::ContainsSubstring("GIF"));

  CHECK(decode_error(read_image("huge_declared.png"), &message) == ErrorCode::image_too_large);
  CHECK_THAT(message, Catch::Matchers::ContainsSubstring("100000x100000"));
  dermal::DecodeOptions small;
  small.max_pixels = 62;  // the photo has 9 x 7 = 63
  CHECK(decode_error(read_image("rgb.jpg"), &message, small) == ErrorCode::image_too_large);
}

TEST_CASE("truncated JPEG, PNG and BMP are refused at every cut", "[image][errors]") {
  for (const std::string name : {"rgb.jpg", "progressive.jpg", "orientation_6.jpg", "rgba.png", "gray16.png", "rgb.bmp"}) {
    const std::vector<std::uint8_t> whole = read_image(name);
    for (std::size_t cut : {std::size_t(1), std::size_t(3), std::size_t(10), whole.size() / 4, whole.size() / 2,
                            whole.size() - 20, whole.size() - 2, whole.size() - 1}) {
      INFO(name << " cut at " << cut << " of " << whole.size());
      const std::vector<std::uint8_t> part(whole.begin(), whole.begin() + cut);
      std::string message;
      const ErrorCode code = decode_error(part, &message);
      CHECK(code == ErrorCode::invalid_image);
      if (cut > 10) CHECK_THAT(message, Catch::Matchers::ContainsSubstring("truncated"));
    }
  }
}

TEST_CASE("a NULL pointer with a size is an argument error", "[image][errors]") {
  CHECK_THROWS_MATCHES(dermal::decode_image(nullptr, 10), dermal::Error,
                       Catch::Matchers::Predicate<dermal::Error>([](const dermal::Error& e) {
                         return e.code() == ErrorCode::invalid_argument;
                       }));
}

TEST_CASE("a truncated PNG's message names the chunk in printable text", "[image][errors]") {
  const std::vector<std::uint8_t> whole = read_image("rgba.png");
  std::vector<std::uint8_t> cut(whole.begin(), whole.begin() + 45);  // inside the IDAT chunk after IHDR
  cut[37] = 0x00;  // a NUL in the chunk type (bytes 37..40) must not cut the message short
  std::string message;
  CHECK(decode_error(cut, &message) == ErrorCode::invalid_image);
  CHECK_THAT(message, Catch::Matchers::ContainsSubstring("truncated PNG data") && Catch::Matchers::ContainsSubstring("?"));
  CHECK(message.find('\0') == std::string::npos);
}
