#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <utility>

#include "dermal/dermal.hpp"

namespace dermal {

namespace {

using nlohmann::json;

constexpr int kFormatVersion = 1;
constexpr int kMaxInputSide = 4096;

[[noreturn]] void refuse(const std::string& what) {
  throw Error(ErrorCode::invalid_model, "invalid model description (dermal.json): " + what);
}

const json& field(const json& object, const char* name, const char* where) {
  auto it = object.find(name);
  if (it == object.end()) refuse(fmt::format("{} has no \"{}\"", where, name));
  return *it;
}

int positive_int(const json& object, const char* name, const char* where, int max) {
  const json& value = field(object, name, where);
  if (!value.is_number_integer() || value.get<std::int64_t>() < 1 || value.get<std::int64_t>() > max)
    refuse(fmt::format("{}.{} must be an integer from 1 to {}, not {}", where, name, max, value.dump()));
  return value.get<int>();
}

std::string text(const json& object, const char* name, const char* where) {
  const json& value = field(object, name, where);
  if (!value.is_string() || value.get<std::string>().empty())
    refuse(fmt::format("{}.{} must be a non-empty string, not {}", where, name, value.dump()));
  return value.get<std::string>();
}

float finite_number(const json& value, const std::string& name) {
  if (!value.is_number() || !std::isfinite(value.get<double>()))
    refuse(fmt::format("{} must be a finite number, not {}", name, value.dump()));
  return value.get<float>();
}

void three_numbers(const json& input, const char* name, float out[3], bool positive) {
  const json& value = field(input, name, "input");
  if (!value.is_array() || value.size() != 3) refuse(fmt::format("input.{} must be a list of 3 numbers", name));
  for (int c = 0; c < 3; ++c) {
    out[c] = finite_number(value[c], fmt::format("input.{}[{}]", name, c));
    if (positive && !(out[c] > 0)) refuse(fmt::format("input.{}[{}] must be above 0", name, c));
  }
}

std::vector<std::string> distinct_strings(const json& root, const char* name) {
  const json& value = field(root, name, "the description");
  if (!value.is_array() || value.empty()) refuse(fmt::format("\"{}\" must be a non-empty list of strings", name));
  std::vector<std::string> items;
  std::set<std::string> seen;
  for (const json& item : value) {
    if (!item.is_string() || item.get<std::string>().empty())
      refuse(fmt::format("\"{}\" holds {}, not a non-empty string", name, item.dump()));
    if (!seen.insert(item.get<std::string>()).second)
      refuse(fmt::format("\"{}\" names \"{}\" twice", name, item.get<std::string>()));
    items.push_back(item.get<std::string>());
  }
  return items;
}

std::optional<ResampleFilter> resample_filter(const std::string& name) {
  const std::pair<const char*, ResampleFilter> names[] = {
      {"nearest", ResampleFilter::nearest}, {"bilinear", ResampleFilter::bilinear},
      {"bicubic", ResampleFilter::bicubic}, {"lanczos", ResampleFilter::lanczos},
      {"box", ResampleFilter::box},         {"hamming", ResampleFilter::hamming}};
  for (const auto& [known, filter] : names)
    if (name == known) return filter;
  return std::nullopt;
}

}  // namespace

ModelDescription parse_description(const std::string& text_json) {
  const json root = json::parse(text_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) refuse("not valid JSON");
  if (!root.is_object()) refuse("the top level must be a JSON object");
  if (!root.contains("dermal_format"))
    refuse("it has no \"dermal_format\": not a file written by a dermal converter; make one with "
           "python3 -m dermal.convert torchvision (or keras)");
  const json& version = root["dermal_format"];
  if (!version.is_number_integer() || version.get<std::int64_t>() != kFormatVersion)
    refuse(fmt::format("dermal_format {} is not supported (this library reads {})", version.dump(), kFormatVersion));

  ModelDescription d;
  d.name = text(root, "name", "the description");
  d.labels = distinct_strings(root, "labels");

  const json& input = field(root, "input", "the description");
  if (!input.is_object()) refuse("\"input\" must be an object");
  d.input_width = positive_int(input, "width", "input", kMaxInputSide);
  d.input_height = positive_int(input, "height", "input", kMaxInputSide);
  const auto resample = input.find("resample");
  if (resample != input.end()) {
    const auto filter = resample->is_string() ? resample_filter(resample->get<std::string>()) : std::nullopt;
    if (!filter)
      refuse(fmt::format("input.resample must be one of \"nearest\", \"bilinear\", \"bicubic\", \"lanczos\", "
                         "\"box\", \"hamming\", not {}", resample->dump()));
    d.resample = filter;
  }
  const std::string resize = text(input, "resize", "input");
  if (resize == "stretch") {
    d.resize = ResizePolicy::stretch;
  } else if (resize == "center_crop") {
    d.resize = ResizePolicy::center_crop;
    d.resize_shorter_to = positive_int(input, "resize_shorter_to", "input", kMaxInputSide);
    if (d.resize_shorter_to < std::max(d.input_width, d.input_height))
      refuse(fmt::format("input.resize_shorter_to {} is smaller than the {}x{} crop", d.resize_shorter_to,
                         d.input_width, d.input_height));
  } else if (resize == "fit") {
    d.resize = ResizePolicy::fit;
    if (!d.resample) refuse("input.resize \"fit\" needs input.resample (the PIL filter ImageOps.fit uses)");
  } else {
    refuse(fmt::format("input.resize must be \"stretch\", \"center_crop\" or \"fit\", not \"{}\"", resize));
  }
  d.scale = finite_number(field(input, "scale", "input"), "input.scale");
  if (!(d.scale > 0)) refuse("input.scale must be above 0");
  three_numbers(input, "mean", d.mean, false);
  three_numbers(input, "std", d.std, true);

  const std::string output = text(root, "output", "the description");
  if (output == "softmax") d.output = OutputActivation::softmax;
  else if (output == "sigmoid") d.output = OutputActivation::sigmoid;
  else refuse(fmt::format("output must be \"softmax\" or \"sigmoid\", not \"{}\"", output));

  d.stages = distinct_strings(root, "stages");
  d.cam_layer = text(root, "cam_layer", "the description");
  if (std::find(d.stages.begin(), d.stages.end(), d.cam_layer) == d.stages.end())
    refuse(fmt::format("cam_layer \"{}\" is not one of the stages", d.cam_layer));
  const auto frozen_only = root.find("frozen_only");
  if (frozen_only != root.end()) {
    if (!frozen_only->is_array()) refuse("\"frozen_only\" must be a list of stage names");
    for (const json& item : *frozen_only) {
      if (!item.is_string() || std::find(d.stages.begin(), d.stages.end(), item.get<std::string>()) == d.stages.end())
        refuse(fmt::format("\"frozen_only\" holds {}, which is not one of the stages", item.dump()));
      d.frozen_only.push_back(item.get<std::string>());
    }
  }
  const auto precision = root.find("precision");
  if (precision != root.end()) {
    if (!precision->is_object()) refuse("\"precision\" must be an object");
    const std::string reduced = text(*precision, "reduced", "precision");
    if (reduced != "bfloat16") refuse(fmt::format("precision.reduced must be \"bfloat16\", not \"{}\"", reduced));
    d.bfloat16 = true;
  }
  return d;
}

}  // namespace dermal
