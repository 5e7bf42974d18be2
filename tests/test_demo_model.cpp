// The bundled demo model on held-out generated photos (a seed never used in
// training), through the library as an application calls it.
#include "catch2.hpp"

#include <fstream>
#include <iterator>
#include <sstream>

#include "dermal/dermal.hpp"
#include "read_bytes.hpp"

namespace {

const std::string kHeldOut = DERMAL_HELD_OUT;

struct Sample {
  std::string photo, label, mask;
};

std::vector<Sample> held_out_samples() {
  std::ifstream csv(kHeldOut + "/labels.csv");
  REQUIRE(csv);
  std::string line;
  std::getline(csv, line);  // header: file,label,mask
  std::vector<Sample> samples;
  while (std::getline(csv, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();  // Python's csv module ends rows with \r\n
    std::istringstream fields(line);
    Sample sample;
    std::getline(fields, sample.photo, ',');
    std::getline(fields, sample.label, ',');
    std::getline(fields, sample.mask, ',');
    samples.push_back(sample);
  }
  return samples;
}

// Whether any lesion pixel lies within `radius` pixels (a square) of (x, y).
bool near_lesion(const dermal::Image& mask, int x, int y, int radius) {
  for (int yy = std::max(0, y - radius); yy <= std::min(mask.height - 1, y + radius); ++yy)
    for (int xx = std::max(0, x - radius); xx <= std::min(mask.width - 1, x + radius); ++xx)
      if (mask.rgb[(static_cast<std::size_t>(yy) * mask.width + xx) * 3] > 127) return true;
  return false;
}

}  // namespace

TEST_CASE("the demo model: top-1 accuracy and the Grad-CAM pointing game on held-out photos", "[model][demo]") {
  const std::vector<Sample> samples = held_out_samples();
  REQUIRE(samples.size() >= 200);
  dermal::Model model(DERMAL_DEMO_MODEL);
  dermal::PredictOptions options;
  options.explain = true;
  options.overlay = false;
  options.full_heatmap = true;
  int correct = 0, hits = 0;
  for (const Sample& sample : samples) {
    const std::vector<std::uint8_t> photo = read_bytes(kHeldOut + "/" + sample.photo);
    const dermal::Prediction prediction = model.predict(photo.data(), photo.size(), options);
    correct += prediction.top.at(0).label == sample.label;
    const dermal::Heatmap& map = prediction.explanations.at(0).full_heatmap;
    const auto peak = std::max_element(map.values.begin(), map.values.end()) - map.values.begin();
    const std::vector<std::uint8_t> mask_bytes = read_bytes(kHeldOut + "/" + sample.mask);
    const dermal::Image mask = dermal::decode_image(mask_bytes.data(), mask_bytes.size());
    REQUIRE(mask.width == map.width);
    hits += near_lesion(mask, static_cast<int>(peak % map.width), static_cast<int>(peak / map.width), 4);
  }
  const double accuracy = static_cast<double>(correct) / samples.size();
  const double pointing = static_cast<double>(hits) / samples.size();
  WARN("demo model on " << samples.size() << " held-out photos: top-1 accuracy " << accuracy
                        << ", Grad-CAM maximum within 4 px of the lesion for " << pointing);
  CHECK(accuracy >= 0.95);
  CHECK(pointing >= 0.90);
}
