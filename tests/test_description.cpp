#include "catch2.hpp"
#include <nlohmann/json.hpp>

#include "dermal/dermal.hpp"

using dermal::ErrorCode;
using nlohmann::json;

namespace {

json valid_description() {
  return json::parse(R"({
    "dermal_format": 1, "name": "test", "labels": ["nevus", "melanoma", "vascular"],
    "input": {"width": 128, "height": 96, "resize": "stretch", "scale": 0.00392156862745098,
              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "output": "softmax", "stages": ["features.0", "features.1", "head"], "cam_layer": "features.1"})");
}

// Parses `description` expecting invalid_model with `words` in the message.
void require_refused(const json& description, const std::string& words) {
  try {
    dermal::parse_description(description.dump());
    FAIL("accepted: " << description.dump());
  } catch (const dermal::Error& e) {
    CHECK(e.code() == ErrorCode::invalid_model);
    CHECK_THAT(e.what(), Catch::Matchers::ContainsSubstring(words));
  }
}

}  // namespace

TEST_CASE("a valid description is read field by field", "[description]") {
  const dermal::ModelDescription d = dermal::parse_description(valid_description().dump());
  CHECK(d.name == "test");
  CHECK(d.labels == std::vector<std::string>{"nevus", "melanoma", "vascular"});
  CHECK(d.input_width == 128);
  CHECK(d.input_height == 96);
  CHECK(d.resize == dermal::ResizePolicy::stretch);
  CHECK(d.scale == Approx(1 / 255.0));
  CHECK(d.mean[2] == Approx(0.406));
  CHECK(d.std[0] == Approx(0.229));
  CHECK(d.output == dermal::OutputActivation::softmax);
  CHECK(d.stages.size() == 3);
  CHECK(d.cam_layer == "features.1");
}

TEST_CASE("center_crop needs a shorter side at least the crop", "[description]") {
  json d = valid_description();
  d["input"]["resize"] = "center_crop";
  require_refused(d, "resize_shorter_to");
  d["input"]["resize_shorter_to"] = 100;
  require_refused(d, "smaller than the 128x96 crop");
  d["input"]["resize_shorter_to"] = 146;
  const dermal::ModelDescription parsed = dermal::parse_description(d.dump());
  CHECK(parsed.resize == dermal::ResizePolicy::center_crop);
  CHECK(parsed.resize_shorter_to == 146);
  d["output"] = "sigmoid";
  CHECK(dermal::parse_description(d.dump()).output == dermal::OutputActivation::sigmoid);
}

TEST_CASE("each wrong field is refused with its name", "[description]") {
  require_refused(json::parse("[1, 2]"), "JSON object");
  CHECK_THROWS_WITH(dermal::parse_description("{not json"), Catch::Matchers::ContainsSubstring("not valid JSON"));
  CHECK_THROWS_WITH(dermal::parse_description(""), Catch::Matchers::ContainsSubstring("not valid JSON"));

  json d = valid_description();
  d["dermal_format"] = 2;
  require_refused(d, "dermal_format 2 is not supported");
  d.erase("dermal_format");
  require_refused(d, "it has no \"dermal_format\": not a file written by a dermal converter; make one with "
                     "python3 -m dermal.convert torchvision (or keras)");
  d = valid_description();
  d.erase("labels");
  require_refused(d, "has no \"labels\"");
  d = valid_description();
  d["labels"] = json::array();
  require_refused(d, "\"labels\" must be a non-empty list");
  d = valid_description();
  d["labels"] = {"nevus", "nevus"};
  require_refused(d, "names \"nevus\" twice");
  d = valid_description();
  d["labels"] = {"nevus", 3};
  require_refused(d, "holds 3");
  d = valid_description();
  d["input"]["width"] = 0;
  require_refused(d, "input.width must be an integer from 1");
  d = valid_description();
  d["input"]["height"] = "96";
  require_refused(d, "input.height");
  d = valid_description();
  d["input"]["resize"] = "squash";
  require_refused(d, "input.resize must be");
  d = valid_description();
  d["input"]["std"] = {0.2, 0.0, 0.2};
  require_refused(d, "input.std[1] must be above 0");
  d = valid_description();
  d["input"]["mean"] = {0.5, 0.5};
  require_refused(d, "input.mean must be a list of 3 numbers");
  d = valid_description();
  d["input"]["scale"] = -1;
  require_refused(d, "input.scale must be above 0");
  d = valid_description();
  d["output"] = "logits";
  require_refused(d, "output must be");
  d = valid_description();
  d["cam_layer"] = "features.9";
  require_refused(d, "cam_layer \"features.9\" is not one of the stages");
  d = valid_description();
  d["frozen_only"] = {"features.5"};
  require_refused(d, "\"frozen_only\" holds \"features.5\"");
  d["frozen_only"] = {"features.0"};
  CHECK(dermal::parse_description(d.dump()).frozen_only == std::vector<std::string>{"features.0"});
  d = valid_description();
  d.erase("stages");
  require_refused(d, "has no \"stages\"");
}

TEST_CASE("precision is optional, and bfloat16 is the one reduced precision", "[description]") {
  json d = valid_description();
  CHECK_FALSE(dermal::parse_description(d.dump()).bfloat16);
  d["precision"] = {{"reduced", "bfloat16"}, {"before", "features.1"}};
  CHECK(dermal::parse_description(d.dump()).bfloat16);
  d["precision"]["reduced"] = "float16";
  require_refused(d, "precision.reduced must be \"bfloat16\", not \"float16\"");
  d["precision"] = "bfloat16";
  require_refused(d, "\"precision\" must be an object");
}

TEST_CASE("resample is optional, names a PIL filter, and fit needs it", "[description]") {
  json d = valid_description();
  CHECK_FALSE(dermal::parse_description(d.dump()).resample.has_value());
  const std::pair<const char*, dermal::ResampleFilter> filters[] = {
      {"nearest", dermal::ResampleFilter::nearest}, {"bilinear", dermal::ResampleFilter::bilinear},
      {"bicubic", dermal::ResampleFilter::bicubic}, {"lanczos", dermal::ResampleFilter::lanczos},
      {"box", dermal::ResampleFilter::box},         {"hamming", dermal::ResampleFilter::hamming}};
  for (const auto& [name, filter] : filters) {
    d["input"]["resample"] = name;
    CHECK(dermal::parse_description(d.dump()).resample == filter);
  }
  for (const json& wrong : {json("LANCZOS"), json("antialias"), json(""), json(1), json(nullptr)}) {
    d["input"]["resample"] = wrong;
    require_refused(d, "input.resample must be one of");
    require_refused(d, wrong.dump());
  }

  d = valid_description();
  d["input"]["resize"] = "fit";
  require_refused(d, "input.resize \"fit\" needs input.resample");
  d["input"]["resample"] = "lanczos";
  const dermal::ModelDescription fit = dermal::parse_description(d.dump());
  CHECK(fit.resize == dermal::ResizePolicy::fit);
  CHECK(fit.resample == dermal::ResampleFilter::lanczos);
  d["input"]["resize"] = "fill";
  require_refused(d, "input.resize must be \"stretch\", \"center_crop\" or \"fit\", not \"fill\"");
}
