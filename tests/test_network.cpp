// The network as load_network prepares it: how many graphs a request runs,
// which of them oneDNN optimised (where its tensor ops run here), and that
// together they still compute the network's forward (logits from Python
// torch, tools/make_model_fixtures.py).
// Torch before Catch: LibTorch pulls in glog, whose CHECK (fatal, uncounted)
// silently replaces Catch's CHECK if it is defined second.
#include "model/network.hpp"

#include "catch2.hpp"

#include <fmt/format.h>

#include <csignal>
#include <cstring>
#include <fstream>

namespace {

const std::string kModels = DERMAL_MODEL_FIXTURES;

// Whether loads optimise here: where oneDNN's tensor ops crash (this
// project's PVM guest under Debian 13), every graph is frozen instead.
bool optimises() { return dermal::onednn_ops_check().ran; }

// The probe's result for a file whose graphs compute it: frozen_fallback
// where the optimised graphs cannot be used.
dermal::ProbeResult agreed() { return optimises() ? dermal::ProbeResult::passed : dermal::ProbeResult::frozen_fallback; }

// As dermal::Model loads (optimised where the process's check allows).
std::shared_ptr<const dermal::Network> load(const std::string& path, const std::string& cam_layer, bool explain,
                                            const dermal::LoadFaults& faults = {}) {
  return dermal::load_network(path, cam_layer, explain, &dermal::onednn_ops_check(), faults);
}

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

TEST_CASE("a request runs one graph (optimised where oneDNN runs) up to the CAM layer and one recorded graph after it, for 15 stages") {
  const auto network = load(kModels + "/many_stages.pt", "", true);
  REQUIRE(network->description.stages.size() == 15);
  CHECK(network->before.size() == 1);
  CHECK(network->after.size() == 1);
  CHECK(optimised(network->before.at(0)) == optimises());
  CHECK(convolutions(network->before.at(0)) == 10);  // features.0 to .9
  CHECK_FALSE(optimised(network->after.at(0)));  // the head must stay differentiable
  CHECK(convolutions(network->after.at(0)) == 2);  // features.10 and .11
  check_logits(*network);
}

TEST_CASE("another CAM layer chosen at load splits the two graphs there") {
  const auto network = load(kModels + "/many_stages.pt", "features.3", true);
  REQUIRE(network->before.size() == 1);
  REQUIRE(network->after.size() == 1);
  CHECK(convolutions(network->after.at(0)) == 8);
  torch::NoGradGuard no_grad;
  CHECK(dermal::run_stages(network->before, many_stages_input()).sizes() == torch::IntArrayRef({1, 8, 32, 40}));
  check_logits(*network);
}

TEST_CASE("with explain off the whole network is one graph (optimised where oneDNN runs)") {
  const auto network = load(kModels + "/many_stages.pt", "", false);
  CHECK(network->before.size() == 1);
  CHECK(network->after.empty());
  CHECK(optimised(network->before.at(0)) == optimises());
  CHECK(convolutions(network->before.at(0)) == 12);
  check_logits(*network);
}

TEST_CASE("a frozen_only stage runs as a frozen graph of its own between optimised ones") {
  for (const bool explain : {true, false}) {
    const auto network = load(kModels + "/many_stages_frozen_only.pt", "", explain);
    if (optimises()) {
      REQUIRE(network->before.size() == 3);  // features.0-3 | features.4 | the rest up to the CAM layer or the end
      CHECK(optimised(network->before[0]));
      CHECK_FALSE(optimised(network->before[1]));
      CHECK(convolutions(network->before[1]) == 1);
      CHECK(optimised(network->before[2]));
    } else {
      REQUIRE(network->before.size() == 1);  // nothing optimised: one frozen graph up to the CAM layer or the end
      CHECK_FALSE(optimised(network->before[0]));
      CHECK(convolutions(network->before[0]) == (explain ? 10u : 12u));
    }
    CHECK(network->after.size() == (explain ? 1u : 0u));
    check_logits(*network);
  }
}

// Probes (tools/dermal_probe.py): a picture and what Python torch computed
// for it with oneDNN off, compared at load with what the graphs compute.
namespace {

// The load's failure, or "" when it loads.
std::pair<dermal::ErrorCode, std::string> load_failure(const std::string& file, const dermal::LoadFaults& faults = {},
                                                       bool explain = true) {
  try {
    load(kModels + "/" + file, "", explain, faults);
  } catch (const dermal::Error& e) {
    return {e.code(), e.what()};
  }
  return {dermal::ErrorCode::ok, ""};
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("a file with a probe that its graphs compute loads, with explain on and off, and one without has none") {
  for (const bool explain : {true, false}) {
    CHECK(load(kModels + "/probe.pt", "", explain)->probe_result == agreed());
    CHECK(load(kModels + "/probe_center_crop.pt", "", explain)->probe_result == agreed());
  }
  const auto network = load(kModels + "/probe.pt", "", true);
  CHECK(network->optimised == optimises());
  CHECK(load(kModels + "/many_stages_frozen_only.pt", "", true)->probe_result ==
        (optimises() ? dermal::ProbeResult::none : dermal::ProbeResult::frozen_fallback));  // written without the writer: no probe
}

TEST_CASE("a file whose probe's logits or CAM map are perturbed is refused, naming the difference and the remedy") {
  const auto [code, message] = load_failure("probe_wrong_logits.pt");
  INFO(message);
  CHECK(code == dermal::ErrorCode::numerics_mismatch);
  CHECK(contains(message, "the file's probe as its exporter did"));
  CHECK(contains(message, "largest difference: logits 0.2"));  // the offset: a fifth of the logits' range
  CHECK(contains(message, "oneDNN ran with this CPU's"));
  CHECK(contains(message, "try setting ONEDNN_MAX_CPU_ISA=AVX2"));
  CHECK(contains(message, optimises() ? "neither the optimised nor the frozen graphs compute" : "the graphs do not compute"));

  const auto [cam_code, cam_message] = load_failure("probe_wrong_cam.pt");
  INFO(cam_message);
  if (dermal::kProbeComparesCam) {
    CHECK(cam_code == dermal::ErrorCode::numerics_mismatch);
    CHECK(contains(cam_message, "Grad-CAM map of"));
    CHECK(contains(cam_message, "0.2 of its range"));
  } else {  // LibTorch 2.x: no backward at load, so that fork()ed children can run theirs
    CHECK(cam_code == dermal::ErrorCode::ok);
  }
  // With explain off the map is not computed: only the logits are compared.
  CHECK(load_failure("probe_wrong_cam.pt", {}, false).first == dermal::ErrorCode::ok);
}

TEST_CASE("optimised graphs that disagree with the probe are replaced by frozen ones that agree") {
  const dermal::LoadFaults wrong{/*optimised_graphs_wrong=*/true};
  const auto network = load(kModels + "/probe.pt", "", true, wrong);
  CHECK(network->probe_result == dermal::ProbeResult::frozen_fallback);
  CHECK_FALSE(network->optimised);
  for (const auto& graph : network->before) CHECK_FALSE(optimised(graph));
  // A perturbed expectation is refused all the same: the frozen graphs disagree too.
  CHECK(load_failure("probe_wrong_logits.pt", wrong).first == dermal::ErrorCode::numerics_mismatch);
}

TEST_CASE("a bfloat16 file's probe passes with the bfloat16 tolerance where bfloat16 files load") {
  const auto [code, message] = load_failure("probe_bf16.pt");
  INFO(message);
  if (code == dermal::ErrorCode::invalid_model) {  // no native bfloat16 here, or an ISA cap below it
    CHECK(contains(message, "bfloat16"));
    return;
  }
  CHECK(code == dermal::ErrorCode::ok);
  CHECK(load(kModels + "/probe_bf16.pt", "", true)->probe_result == agreed());
}

TEST_CASE("a Model shows its probe's result, and refuses a file whose probe fails with numerics_mismatch") {
  dermal::Model model(kModels + "/probe.pt");
  CHECK(model.probe_result() == agreed());
  CHECK(std::string(dermal::probe_result_name(model.probe_result())) == dermal::probe_result_name(agreed()));
  model.unload();
  CHECK(model.probe_result() == dermal::ProbeResult::none);
  CHECK(dermal::Model(kModels + "/tiny.pt").probe_result() == agreed());  // the writer adds one
  CHECK(dermal::Model(kModels + "/many_stages_frozen_only.pt").probe_result() ==
        (optimises() ? dermal::ProbeResult::none : dermal::ProbeResult::frozen_fallback));
  try {
    dermal::Model wrong(kModels + "/probe_wrong_logits.pt");
    FAIL("loaded");
  } catch (const dermal::Error& e) {
    CHECK(e.code() == dermal::ErrorCode::numerics_mismatch);
    CHECK(std::string(dermal::error_code_name(e.code())) == "numerics_mismatch");
  }
}

TEST_CASE("oneDNN's ops check reports a child killed by SIGFPE, as the faulty oneDNN kills it") {
  const dermal::OnednnOpsCheck crashed = dermal::check_onednn_ops(/*crash=*/true);
  INFO(crashed.finding);
  CHECK_FALSE(crashed.ran);
  CHECK(crashed.finding == fmt::format("were killed by signal {} ({})", SIGFPE, strsignal(SIGFPE)));
  INFO("this machine: " << dermal::onednn_ops_check().finding);
  CHECK(dermal::onednn_ops_check().ran == (dermal::onednn_ops_check().finding == "ran"));
}

TEST_CASE("where oneDNN's ops crash, the frozen graphs are served, with or without a probe, and a wrong probe is still refused") {
  const dermal::OnednnOpsCheck crashed = dermal::check_onednn_ops(/*crash=*/true);
  for (const std::string file : {"probe.pt", "many_stages_frozen_only.pt"}) {
    const auto network = dermal::load_network(kModels + "/" + file, "", true, &crashed);
    CHECK(network->probe_result == dermal::ProbeResult::frozen_fallback);
    CHECK_FALSE(network->optimised);
    for (const auto& graph : network->before) CHECK_FALSE(optimised(graph));
  }
  try {
    dermal::load_network(kModels + "/probe_wrong_logits.pt", "", true, &crashed);
    FAIL("loaded");
  } catch (const dermal::Error& e) {
    CHECK(e.code() == dermal::ErrorCode::numerics_mismatch);
    CHECK(contains(e.what(), "the graphs do not compute"));
  }
}

TEST_CASE("with optimise off the graphs are frozen only, and a probe they compute passes") {
  const auto network = dermal::load_network(kModels + "/probe.pt", "", true, /*onednn_ops=*/nullptr);
  CHECK(network->probe_result == dermal::ProbeResult::passed);
  CHECK_FALSE(network->optimised);
  for (const auto& graph : network->before) CHECK_FALSE(optimised(graph));
  check_logits(*dermal::load_network(kModels + "/many_stages.pt", "", false, nullptr));
  dermal::LoadOptions options;
  options.optimise = false;
  CHECK(dermal::Model(kModels + "/probe.pt", options).probe_result() == dermal::ProbeResult::passed);
}
