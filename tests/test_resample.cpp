#include "catch2.hpp"

#include <fstream>
#include <map>
#include <sstream>

#include "dermal/dermal.hpp"
#include "image/preprocess.hpp"
#include "image/resample.hpp"
#include "read_bytes.hpp"

namespace {

const std::string kResampleFixtures = DERMAL_RESAMPLE_FIXTURES;

dermal::ResampleFilter filter_named(const std::string& name) {
  const std::map<std::string, dermal::ResampleFilter> filters = {
      {"nearest", dermal::ResampleFilter::nearest}, {"bilinear", dermal::ResampleFilter::bilinear},
      {"bicubic", dermal::ResampleFilter::bicubic}, {"lanczos", dermal::ResampleFilter::lanczos},
      {"box", dermal::ResampleFilter::box},         {"hamming", dermal::ResampleFilter::hamming}};
  return filters.at(name);
}

dermal::ResizePolicy policy_named(const std::string& name) {
  if (name == "stretch") return dermal::ResizePolicy::stretch;
  if (name == "center_crop") return dermal::ResizePolicy::center_crop;
  REQUIRE(name == "fit");
  return dermal::ResizePolicy::fit;
}

struct Tally {
  int images = 0;
  std::size_t bytes = 0;
  std::size_t differing = 0;
};

}  // namespace

// The photos and PIL's outputs come from tools/make_resample_fixtures.py.
TEST_CASE("every filter and policy gives the bytes PIL gives", "[image][resample]") {
  const std::vector<std::uint8_t> photo_bytes = read_bytes(kResampleFixtures + "/photos.bin");
  const std::vector<std::uint8_t> expected = read_bytes(kResampleFixtures + "/expected.bin");
  std::ifstream cases(kResampleFixtures + "/cases.txt");
  REQUIRE(cases);
  std::vector<dermal::Image> photos;
  std::map<std::string, Tally> tallies;  // "mode filter"
  std::string line;
  while (std::getline(cases, line)) {
    std::istringstream words(line);
    std::string kind;
    words >> kind;
    if (kind == "photo") {
      int index = 0;
      std::size_t offset = 0;
      dermal::Image photo;
      words >> index >> photo.width >> photo.height >> offset;
      const std::size_t size = static_cast<std::size_t>(photo.width) * photo.height * 3;
      REQUIRE(offset + size <= photo_bytes.size());
      photo.rgb.assign(photo_bytes.begin() + offset, photo_bytes.begin() + offset + size);
      photos.push_back(std::move(photo));
    } else if (kind == "case") {
      std::size_t index = 0, offset = 0;
      std::string mode, filter;
      dermal::ModelDescription d;
      words >> index >> mode >> filter >> d.input_width >> d.input_height >> d.resize_shorter_to >> offset;
      REQUIRE(index < photos.size());
      d.resize = policy_named(mode);
      d.resample = filter_named(filter);
      const dermal::ResizeWindow window = dermal::input_window(photos[index], d);
      const dermal::Image resized = dermal::resize_like_pillow(photos[index], *d.resample, window);
      REQUIRE(resized.width == d.input_width);
      REQUIRE(resized.height == d.input_height);
      REQUIRE(offset + resized.rgb.size() <= expected.size());
      Tally& tally = tallies[mode + " " + filter];
      std::size_t differing = 0;
      for (std::size_t i = 0; i < resized.rgb.size(); ++i) differing += resized.rgb[i] != expected[offset + i];
      if (differing && tally.differing == 0)  // the first photo that differs, per filter and policy
        UNSCOPED_INFO(mode << " " << filter << ": photo " << index << " (" << photos[index].width << "x"
                           << photos[index].height << ") to " << d.input_width << "x" << d.input_height << ": "
                           << differing << " bytes differ");
      ++tally.images;
      tally.bytes += resized.rgb.size();
      tally.differing += differing;
    }
  }
  REQUIRE(photos.size() == 200);
  REQUIRE(tallies.size() == 18);  // 3 policies x 6 filters
  Tally total;
  for (const auto& [name, tally] : tallies) {
    INFO(name);
    CHECK(tally.images == 200);
    CHECK(tally.differing == 0);
    total.images += tally.images;
    total.bytes += tally.bytes;
    total.differing += tally.differing;
  }
  WARN("PIL identity: " << total.images << " images (200 photos x 6 filters x 3 policies), " << total.bytes
                        << " bytes compared, " << total.differing << " differ");
}

TEST_CASE("a window or box that does not fit the picture is refused", "[image][resample]") {
  dermal::Image photo;
  photo.width = 4;
  photo.height = 3;
  photo.rgb.assign(4 * 3 * 3, 100);
  dermal::ResizeWindow window;
  window.resized_width = window.width = 2;
  window.resized_height = window.height = 2;
  window.box_right = 4;
  window.box_bottom = 3;
  CHECK(dermal::resize_like_pillow(photo, dermal::ResampleFilter::bilinear, window).rgb ==
        std::vector<std::uint8_t>(2 * 2 * 3, 100));
  dermal::ResizeWindow outside = window;
  outside.left = 1;
  CHECK_THROWS_WITH(dermal::resize_like_pillow(photo, dermal::ResampleFilter::bilinear, outside),
                    Catch::Matchers::ContainsSubstring("window"));
  dermal::ResizeWindow wide_box = window;
  wide_box.box_right = 4.5f;
  CHECK_THROWS_WITH(dermal::resize_like_pillow(photo, dermal::ResampleFilter::lanczos, wide_box),
                    Catch::Matchers::ContainsSubstring("box"));
}
