// The bad-input corpus (tests/fixtures/bad_inputs, made by tools/make_bad_inputs.py)
// replayed through decode_image in unit_tests and through Model::predict in
// model_tests: every file gets its documented status and a message, or, when
// valid, a picture of the expected size (and a classification).
#include "catch2.hpp"

#include <fstream>
#include <iterator>
#include <sstream>

#include "dermal/dermal.hpp"
#include "read_bytes.hpp"

namespace {

const std::string kBadInputs = DERMAL_BAD_INPUTS;

struct BadInput {
  std::string file;
  std::string status;  // an error_code_name, or "ok"
  int width = 0;       // ok only: the decoded size
  int height = 0;
};

std::vector<BadInput> read_corpus() {
  std::ifstream list(kBadInputs + "/expected.txt");
  REQUIRE(list);
  std::vector<BadInput> corpus;
  for (std::string line; std::getline(list, line);) {
    std::istringstream fields(line);
    BadInput input;
    std::string size;
    fields >> input.file >> input.status >> size;
    if (!size.empty()) {
      input.width = std::stoi(size.substr(0, size.find('x')));
      input.height = std::stoi(size.substr(size.find('x') + 1));
    }
    corpus.push_back(input);
  }
  return corpus;
}

}  // namespace

#ifndef DERMAL_MODEL_FIXTURES

TEST_CASE("the bad-input corpus: each file gets its documented status", "[image][errors][corpus]") {
  const std::vector<BadInput> corpus = read_corpus();
  CHECK(corpus.size() >= 25);
  for (const BadInput& input : corpus) {
    INFO(input.file << " should be " << input.status);
    const std::vector<std::uint8_t> bytes = read_bytes(kBadInputs + "/" + input.file);
    try {
      const dermal::Image image = dermal::decode_image(bytes.data(), bytes.size());
      CHECK(input.status == "ok");
      CHECK(image.width == input.width);
      CHECK(image.height == input.height);
      CHECK(image.rgb.size() == static_cast<std::size_t>(image.width) * image.height * 3);
    } catch (const dermal::Error& e) {
      INFO("message: " << e.what());
      CHECK(dermal::error_code_name(e.code()) == input.status);
      CHECK(std::string(e.what()).size() > 10);
    }
  }
}

#else

TEST_CASE("the bad-input corpus through predict: the same statuses, valid photos classified", "[model][errors][corpus]") {
  dermal::Model model(std::string(DERMAL_MODEL_FIXTURES) + "/tiny.pt");
  dermal::PredictOptions options;
  options.explain = true;
  options.full_heatmap = true;
  for (const BadInput& input : read_corpus()) {
    INFO(input.file << " should be " << input.status);
    const std::vector<std::uint8_t> bytes = read_bytes(kBadInputs + "/" + input.file);
    try {
      const dermal::Prediction prediction = model.predict(bytes.data(), bytes.size(), options);
      CHECK(input.status == "ok");
      CHECK(prediction.top.size() == 3);
      REQUIRE(prediction.explanations.size() == 1);
      CHECK(prediction.explanations[0].full_heatmap.width == input.width);
      CHECK(prediction.explanations[0].full_heatmap.height == input.height);
      CHECK_FALSE(prediction.explanations[0].overlay.empty());
    } catch (const dermal::Error& e) {
      INFO("message: " << e.what());
      CHECK(dermal::error_code_name(e.code()) == input.status);
    }
  }
}

TEST_CASE("networks that are not image classifiers are refused at load", "[model][errors][corpus]") {
  struct Case {
    const char* file;
    const char* words;
  };
  const Case cases[] = {
      {"four_d_output.pt", "outputs shape 1x5x16x20"},   // a segmentation-like map, not one score per label
      {"two_inputs.pt", "rejects a 1x3x32x40 input"},   // a stage that wants a second input
  };
  for (const Case& c : cases) {
    INFO(c.file);
    try {
      dermal::Model model(std::string(DERMAL_MODEL_FIXTURES) + "/" + c.file);
      FAIL("loaded");
    } catch (const dermal::Error& e) {
      CHECK(e.code() == dermal::ErrorCode::invalid_model);
      CHECK_THAT(e.what(), Catch::Matchers::ContainsSubstring(c.words));
    }
  }
}

#endif
