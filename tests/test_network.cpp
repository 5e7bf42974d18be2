// The network as load_network prepares it: how many graphs a request runs,
// which of them oneDNN optimised (LibTorch 1.x; under 2.x none is), and that
// together they still compute the network's forward (logits from Python
// torch, tools/make_model_fixtures.py).
// Torch before Catch: LibTorch pulls in glog, whose CHECK (fatal, uncounted)
// silently replaces Catch's CHECK if it is defined second.
#include "model/network.hpp"

#include "catch2.hpp"

#include <torch/version.h>

#include <fstream>

namespace {

const std::string kModels = DERMAL_MODEL_FIXTURES;

// As src/model/network.cpp decides: LibTorch 2.x (Debian 13) freezes every
// stage and optimises none, so frozen_only stages run in the frozen graph of
// their neighbours there.
constexpr bool kOptimises = TORCH_VERSION_MAJOR < 2;

// optimize_for_inference turns convolutions into oneDNN's; freezing alone does not.
bool optimised(const torch::jit::Module& graph) {
  return graph.get_method("forward").graph()->toString().find("mkldnn") != std::string::npos;
}

// Convolution nodes in a graph, frozen (aten::conv2d) or optimised (prim::mkldnn_convolution).
std::size_t convolutions(const torch::jit::Module& graph) {
  const std::string text = graph.get_method("forward").graph()->toString();
  std::size_t count = 0;
  for (const std::string kind : {"aten::conv2d(", "prim::mkldnn_convolution("})
    for (std::size_t at = text.find(kind); at != std::string::npos; at = text.find(kind, at + 1)) ++count;
  return count;
}

// many_stages_input() of tools/make_model_fixtures.py.
torch::Tensor many_stages_input() {
  return torch::remainder(torch::arange(3 * 32 * 40, torch::kFloat32).reshape({1, 3, 32, 40}), 17) / 8 - 1;
}

void check_logits(const dermal::Network& network) {
  std::ifstream file(kModels + "/many_stages_logits.txt");
  REQUIRE(file);
  std::vector<float> expected;
  for (float v; file >> v;) expected.push_back(v);
  torch::NoGradGuard no_grad;
  const torch::Tensor logits =
      dermal::run_stages(network.after, dermal::run_stages(network.before, many_stages_input())).contiguous();
  REQUIRE(logits.numel() == static_cast<std::int64_t>(expected.size()));
  for (std::size_t i = 0; i < expected.size(); ++i) CHECK(logits[0][i].item<float>() == Approx(expected[i]).margin(1e-4));
}

}  // namespace

TEST_CASE("a request runs one graph (optimised on LibTorch 1.x) up to the CAM layer and one recorded graph after it, for 15 stages") {
  const auto network = dermal::load_network(kModels + "/many_stages.pt", "", true);
  REQUIRE(network->description.stages.size() == 15);
  CHECK(network->before.size() == 1);
  CHECK(network->after.size() == 1);
  CHECK(optimised(network->before.at(0)) == kOptimises);
  CHECK(convolutions(network->before.at(0)) == 10);  // features.0 to .9
  CHECK_FALSE(optimised(network->after.at(0)));  // the head must stay differentiable
  CHECK(convolutions(network->after.at(0)) == 2);  // features.10 and .11
  check_logits(*network);
}

TEST_CASE("another CAM layer chosen at load splits the two graphs there") {
  const auto network = dermal::load_network(kModels + "/many_stages.pt", "features.3", true);
  REQUIRE(network->before.size() == 1);
  REQUIRE(network->after.size() == 1);
  CHECK(convolutions(network->after.at(0)) == 8);
  torch::NoGradGuard no_grad;
  CHECK(dermal::run_stages(network->before, many_stages_input()).sizes() == torch::IntArrayRef({1, 8, 32, 40}));
  check_logits(*network);
}

TEST_CASE("with explain off the whole network is one graph (optimised on LibTorch 1.x)") {
  const auto network = dermal::load_network(kModels + "/many_stages.pt", "", false);
  CHECK(network->before.size() == 1);
  CHECK(network->after.empty());
  CHECK(optimised(network->before.at(0)) == kOptimises);
  CHECK(convolutions(network->before.at(0)) == 12);
  check_logits(*network);
}

TEST_CASE("a frozen_only stage runs as a frozen graph of its own between optimised ones (LibTorch 1.x)") {
  for (const bool explain : {true, false}) {
    const auto network = dermal::load_network(kModels + "/many_stages_frozen_only.pt", "", explain);
    if (kOptimises) {
      REQUIRE(network->before.size() == 3);  // features.0-3 | features.4 | the rest up to the CAM layer or the end
      CHECK(optimised(network->before[0]));
      CHECK_FALSE(optimised(network->before[1]));
      CHECK(convolutions(network->before[1]) == 1);
      CHECK(optimised(network->before[2]));
    } else {
      REQUIRE(network->before.size() == 1);  // every stage frozen only: one graph up to the CAM layer or the end
      CHECK_FALSE(optimised(network->before[0]));
      CHECK(convolutions(network->before[0]) == (explain ? 10u : 12u));
    }
    CHECK(network->after.size() == (explain ? 1u : 0u));
    check_logits(*network);
  }
}
