// CAM variants against tools/make_cam_fixtures.py's independent references.
// Torch before Catch: LibTorch pulls in glog, whose CHECK (fatal, uncounted)
// silently replaces Catch's CHECK if it is defined second.
#include "heatmap/cam.hpp"

#include <torch/csrc/autograd/autograd.h>

#include "catch2.hpp"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

using dermal::CamMethod;

struct Expected {
  std::string method;
  bool flat = false;
  std::vector<float> values;
};

struct CamCase {
  std::string name;
  int64_t k = 0, h = 0, w = 0;
  torch::Tensor activation, gradient;
  std::vector<Expected> expected;
};

// Finer-CAM's explained score: its value and gradient for given logits.
struct ScoreCase {
  std::string name;
  int64_t class_index = 0, n = 0;
  std::vector<float> logits;
  double value = 0.0;
  std::vector<double> gradient;
};

const std::vector<std::string> kMethodNames = {"gradcam",  "gradcam++", "xgradcam",           "hirescam",
                                               "layercam", "eigencam",  "gradcamelementwise", "eigengradcam",
                                               "finercam", "fem",       "kpcacam"};

std::vector<float> parse_floats(std::istringstream& in) {
  std::vector<float> out;
  std::string token;
  while (in >> token) out.push_back(std::strtof(token.c_str(), nullptr));  // reads nan, inf
  return out;
}

torch::Tensor to_tensor(const std::vector<float>& v, int64_t k, int64_t h, int64_t w) {
  REQUIRE(static_cast<int64_t>(v.size()) == k * h * w);
  return torch::tensor(v).reshape({k, h, w});
}

struct Fixtures {
  std::vector<CamCase> cams;
  std::vector<ScoreCase> scores;
};

Fixtures load_fixtures() {
  std::ifstream file(std::string(DERMAL_FIXTURES) + "/cam_cases.txt");
  REQUIRE(file);
  Fixtures fixtures;
  std::vector<CamCase>& cases = fixtures.cams;
  bool in_score = false;
  std::string line;
  while (std::getline(file, line)) {
    std::istringstream in(line);
    std::string tag;
    if (!(in >> tag) || tag[0] == '#' || tag == "end") continue;
    if (tag == "case") {
      in_score = false;
      cases.emplace_back();
      in >> cases.back().name >> cases.back().k >> cases.back().h >> cases.back().w;
      continue;
    }
    if (tag == "score") {
      in_score = true;
      fixtures.scores.emplace_back();
      in >> fixtures.scores.back().name >> fixtures.scores.back().class_index >> fixtures.scores.back().n;
      continue;
    }
    if (in_score) {
      ScoreCase& s = fixtures.scores.back();
      if (tag == "logits") {
        s.logits = parse_floats(in);
        REQUIRE(static_cast<int64_t>(s.logits.size()) == s.n);
      } else {
        REQUIRE(tag == "expect");
        in >> s.value;
        double g = 0.0;
        while (in >> g) s.gradient.push_back(g);
        REQUIRE(static_cast<int64_t>(s.gradient.size()) == s.n);
      }
      continue;
    }
    REQUIRE(!cases.empty());
    CamCase& c = cases.back();
    if (tag == "A") {
      c.activation = to_tensor(parse_floats(in), c.k, c.h, c.w);
    } else if (tag == "G") {
      c.gradient = to_tensor(parse_floats(in), c.k, c.h, c.w);
    } else {
      REQUIRE(tag == "expect");
      Expected e;
      int flat = 0;
      in >> e.method >> flat;
      e.flat = flat != 0;
      e.values = parse_floats(in);
      REQUIRE(static_cast<int64_t>(e.values.size()) == c.h * c.w);
      c.expected.push_back(e);
    }
  }
  return fixtures;
}

dermal::NormalizedMap run(CamMethod method, const torch::Tensor& a, const torch::Tensor& g) {
  return dermal::normalize_map(dermal::cam_map(method, a, g));
}

bool all_zero(const dermal::Heatmap& h) {
  for (float v : h.values) {
    if (v != 0.0f) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("every CAM variant matches the reference within 1e-5", "[cam]") {
  const std::vector<CamCase> cases = load_fixtures().cams;
  REQUIRE(cases.size() >= 9);
  int flat_maps = 0;
  std::map<std::string, int> checked;  // maps compared, per method
  for (const CamCase& c : cases) {
    // Every method in every case, except an eigen method where the case has no eigenvalue gap.
    CHECK(c.expected.size() >= kMethodNames.size() - 1);
    for (const Expected& e : c.expected) {
      ++checked[e.method];
      INFO("case " << c.name << ", method " << e.method);
      const std::size_t plus = e.method.find("+eigen_smooth");
      const bool smooth = plus != std::string::npos;
      const CamMethod method = dermal::parse_cam_method(e.method.substr(0, plus));
      const dermal::NormalizedMap got =
          dermal::normalize_map(dermal::cam_map(method, c.activation, c.gradient, smooth));
      REQUIRE(got.map.width == c.w);
      REQUIRE(got.map.height == c.h);
      REQUIRE(got.map.values.size() == e.values.size());
      CHECK(got.flat == e.flat);
      double worst = 0.0;
      for (size_t i = 0; i < e.values.size(); ++i) {
        const double d = std::abs(static_cast<double>(got.map.values[i]) - e.values[i]);
        worst = std::isnan(d) ? std::numeric_limits<double>::infinity() : std::max(worst, d);
      }
      CHECK(worst <= 1e-5);
      if (e.flat) {
        ++flat_maps;
        CHECK(all_zero(got.map));
      }
    }
  }
  CHECK(flat_maps > 0);
  for (const std::string& name : kMethodNames) {
    INFO(name);
    CHECK(checked[name] >= 7);
  }
  for (const char* name : {"gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "gradcamelementwise"}) {
    INFO(name << "+eigen_smooth");
    CHECK(checked[std::string(name) + "+eigen_smooth"] >= 3);
  }
}

TEST_CASE("Finer-CAM's explained score and its gradient match the reference", "[cam]") {
  const std::vector<ScoreCase> cases = load_fixtures().scores;
  REQUIRE(cases.size() >= 5);
  for (const ScoreCase& s : cases) {
    INFO("score case " << s.name);
    const torch::Tensor logits = torch::tensor(s.logits).requires_grad_();
    const torch::Tensor value = dermal::explained_score(CamMethod::finercam, logits, s.class_index);
    const torch::Tensor gradient = torch::autograd::grad({value}, {logits})[0];
    CHECK(value.item<double>() == Approx(s.value).margin(1e-5));
    for (int64_t j = 0; j < s.n; ++j) {
      INFO("logit " << j);
      CHECK(gradient[j].item<double>() == Approx(s.gradient[j]).margin(1e-5));
    }
  }
  // Every other method explains the class's own logit.
  const torch::Tensor logits = torch::tensor({0.5f, -1.0f, 2.0f});
  CHECK(dermal::explained_score(CamMethod::hirescam, logits, 1).item<float>() == -1.0f);
}

TEST_CASE("maps with NaN or Inf come back flat and all zero", "[cam]") {
  const float bad = GENERATE(std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity());
  torch::Tensor m = torch::rand({4, 5});
  m[2][3] = bad;
  const dermal::NormalizedMap out = dermal::normalize_map(m);
  CHECK(out.flat);
  CHECK(out.map.width == 5);
  CHECK(out.map.height == 4);
  CHECK(out.map.values.size() == 20);
  CHECK(all_zero(out.map));
}

TEST_CASE("maps without contrast are flat and contrast is judged relative to scale", "[cam]") {
  CHECK(dermal::normalize_map(torch::full({3, 3}, 2.5f)).flat);
  CHECK(dermal::normalize_map(torch::zeros({3, 3})).flat);
  CHECK(dermal::normalize_map(-torch::rand({3, 3}) - 0.1f).flat);  // nothing left after ReLU
  CHECK(dermal::normalize_map(torch::full({3, 3}, 1.0f) + 1e-7f * torch::eye(3)).flat);
  CHECK_FALSE(dermal::normalize_map(torch::full({3, 3}, 1.0f) + 1e-5f * torch::eye(3)).flat);

  const torch::Tensor m = torch::rand({6, 4}) + 0.1f;
  const dermal::NormalizedMap big = dermal::normalize_map(m);
  const dermal::NormalizedMap tiny = dermal::normalize_map(m * 1e-20f);
  REQUIRE_FALSE(big.flat);
  REQUIRE_FALSE(tiny.flat);
  for (size_t i = 0; i < big.map.values.size(); ++i) {
    CHECK(tiny.map.values[i] == Approx(big.map.values[i]).margin(1e-6));
    CHECK(big.map.values[i] >= 0.0f);
    CHECK(big.map.values[i] <= 1.0f);
  }
}

TEST_CASE("a per-channel constant gradient makes Grad-CAM equal HiResCAM", "[cam]") {
  // The global-average-pool → linear head oracle of FACTS.md.
  const torch::Tensor a = torch::relu(torch::randn({6, 5, 7}));
  const torch::Tensor g = torch::randn({6, 1, 1}).expand({6, 5, 7});
  const torch::Tensor grad = dermal::cam_map(CamMethod::gradcam, a, g);
  const torch::Tensor hires = dermal::cam_map(CamMethod::hirescam, a, g);
  CHECK(torch::allclose(grad, hires, 1e-5, 1e-6));
}

TEST_CASE("cam_map runs without autograd and checks shapes", "[cam]") {
  const torch::Tensor a = torch::rand({3, 4, 5}).requires_grad_();
  const torch::Tensor g = torch::randn({3, 4, 5});
  for (const std::string& name : kMethodNames) {
    const CamMethod method = dermal::parse_cam_method(name);
    INFO(name);
    const torch::Tensor m = dermal::cam_map(method, a, g);
    CHECK(m.sizes() == torch::IntArrayRef({4, 5}));
    CHECK(m.scalar_type() == torch::kFloat);
    CHECK_FALSE(m.requires_grad());
  }
  for (CamMethod method : {CamMethod::eigencam, CamMethod::fem, CamMethod::kpcacam}) {
    CHECK_FALSE(dermal::cam_method_uses_gradient(method));
    CHECK(dermal::cam_map(method, a, torch::Tensor()).sizes() == torch::IntArrayRef({4, 5}));
  }

  auto code_of = [](auto&& call) {
    try {
      call();
    } catch (const dermal::Error& e) {
      return e.code();
    }
    return dermal::ErrorCode::ok;
  };
  using dermal::ErrorCode;
  CHECK(code_of([&] { dermal::cam_map(CamMethod::gradcam, a, torch::randn({3, 4, 6})); }) ==
        ErrorCode::invalid_argument);
  CHECK(code_of([&] { dermal::cam_map(CamMethod::layercam, a, torch::Tensor()); }) ==
        ErrorCode::invalid_argument);
  CHECK(code_of([&] { dermal::cam_map(CamMethod::gradcam, a.unsqueeze(0), g.unsqueeze(0)); }) ==
        ErrorCode::invalid_argument);
  CHECK(code_of([&] { dermal::cam_map(CamMethod::eigencam, torch::rand({0, 4, 5}), g); }) ==
        ErrorCode::invalid_argument);
  CHECK(code_of([&] { dermal::normalize_map(torch::rand({1, 4, 5})); }) ==
        ErrorCode::invalid_argument);
  CHECK(code_of([&] { dermal::cam_map(CamMethod::ablationcam, a, g); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { dermal::cam_map(CamMethod::scorecam, a, g); }) == ErrorCode::invalid_argument);
}

TEST_CASE("CAM method names round-trip and unknown names are refused", "[cam]") {
  std::vector<std::string> names = kMethodNames;
  names.push_back("ablationcam");  // its weights come from the network: tests/test_model.cpp
  names.push_back("scorecam");     // so do its
  for (const std::string& name : names) {
    CHECK(dermal::cam_method_name(dermal::parse_cam_method(name)) == name);
  }
  CHECK(dermal::parse_cam_method("gradcam++") == CamMethod::gradcam_plus_plus);
  for (const char* bad : {"", "GradCAM", "gradcampp", "fullgrad"}) {
    INFO("name \"" << bad << "\"");
    try {
      dermal::parse_cam_method(bad);
      FAIL("accepted");
    } catch (const dermal::Error& e) {
      CHECK(e.code() == dermal::ErrorCode::invalid_argument);
      for (const std::string& name : names) {
        CHECK_THAT(e.what(), Catch::Matchers::ContainsSubstring("\"" + name + "\""));
      }
    }
  }
}
