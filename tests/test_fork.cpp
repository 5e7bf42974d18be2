// A model loaded before fork() serves requests in the children, as gunicorn's
// preload_app uses it: the children's results equal the parent's, whatever
// LibTorch's thread count, a fork during requests waits for them, and the
// parent goes on serving afterwards.
//
// LibTorch 2.x (Debian 13) refuses every backward pass in a child forked after
// its parent ran one ("Unable to handle autograd's threading in combination
// with fork-based multiprocessing"), so there a parent that forks runs no
// Grad-CAM before forking (as gunicorn's master, which only loads), and a
// child of one that did gets that error for Grad-CAM, not a crash.
#include <torch/version.h>

#include "catch2.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>

#include "dermal/dermal.hpp"
#include "read_bytes.hpp"

namespace {

const std::string kModels = DERMAL_MODEL_FIXTURES;
constexpr int kChildTimeoutMs = 120000;
constexpr bool kGradCamSurvivesFork = TORCH_VERSION_MAJOR < 2;

// What a request returns, as numbers that cross a pipe.
std::vector<float> fingerprint(dermal::Model& model, const std::vector<std::uint8_t>& photo, bool explain = true) {
  dermal::PredictOptions options;
  options.explain = explain;
  options.overlay = false;
  const dermal::Prediction prediction = model.predict(photo.data(), photo.size(), options);
  std::vector<float> numbers = prediction.probabilities;
  for (const dermal::Explanation& explanation : prediction.explanations)
    numbers.insert(numbers.end(), explanation.heatmap.values.begin(), explanation.heatmap.values.end());
  return numbers;
}

struct Child {
  pid_t pid = -1;
  int pipe = -1;
};

// Forks a child that runs `requests` predictions and writes the last one's
// fingerprint to a pipe; the child never returns into the test runner.
Child fork_child(dermal::Model& model, const std::vector<std::uint8_t>& photo, int requests) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    int status = 0;
    try {
      std::vector<float> numbers;
      for (int i = 0; i < requests; ++i) numbers = fingerprint(model, photo);
      const std::size_t bytes = numbers.size() * sizeof(float);
      status = write(fds[1], numbers.data(), bytes) == static_cast<ssize_t>(bytes) ? 0 : 3;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      status = 2;
    } catch (...) {
      status = 2;
    }
    _exit(status);
  }
  close(fds[1]);
  return {pid, fds[0]};
}

// Reads a child's fingerprint (until the child closes the pipe) and its
// exit; a child that has not finished within the timeout is killed and
// reported as hung.
std::vector<float> collect(const Child& child, std::string& failure) {
  std::string bytes;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kChildTimeoutMs);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd fd{child.pipe, POLLIN, 0};
    if (left.count() <= 0 || poll(&fd, 1, static_cast<int>(left.count())) <= 0) {
      failure = "child hung (no result within the timeout)";
      kill(child.pid, SIGKILL);
      break;
    }
    char buffer[4096];
    const ssize_t n = read(child.pipe, buffer, sizeof buffer);
    if (n <= 0) break;
    bytes.append(buffer, static_cast<std::size_t>(n));
  }
  close(child.pipe);
  int status = 0;
  waitpid(child.pid, &status, 0);
  if (failure.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    failure = WIFSIGNALED(status) ? "child killed by signal " + std::to_string(WTERMSIG(status))
                                  : "child exited with " + std::to_string(WEXITSTATUS(status));
  if (failure.empty() && bytes.size() % sizeof(float) != 0) failure = "child wrote a partial number";
  std::vector<float> numbers(bytes.size() / sizeof(float));
  std::memcpy(numbers.data(), bytes.data(), numbers.size() * sizeof(float));
  return numbers;
}

// The largest difference between two fingerprints; infinite when their lengths differ.
float max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  float worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

void check_children_match_parent(int torch_threads, int max_concurrent) {
  dermal::LoadOptions load;
  load.threads = torch_threads;
  load.max_concurrent = max_concurrent;
  dermal::Model model(kModels + "/tiny_512.pt", load);
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  // The parent's threads and pools now exist (and, on LibTorch 1.x, autograd's).
  const std::vector<float> before_fork = fingerprint(model, photo, kGradCamSurvivesFork);

  std::vector<Child> children;
  for (int i = 0; i < 3; ++i) children.push_back(fork_child(model, photo, 3));
  std::vector<std::string> failures(children.size());
  std::vector<std::vector<float>> results;
  for (std::size_t i = 0; i < children.size(); ++i) results.push_back(collect(children[i], failures[i]));
  const std::vector<float> expected = fingerprint(model, photo);  // the parent serves on
  INFO("threads " << torch_threads << ", max_concurrent " << max_concurrent);
  if (kGradCamSurvivesFork) CHECK(max_difference(before_fork, expected) <= 1e-6f);
  for (std::size_t i = 0; i < children.size(); ++i) {
    INFO("child " << i);
    REQUIRE(failures[i] == "");
    CHECK(max_difference(results[i], expected) <= 1e-6f);
  }
}

}  // namespace

TEST_CASE("children of fork() predict as the parent, 1 LibTorch thread", "[model][fork]") {
  check_children_match_parent(1, 1);
}

TEST_CASE("children of fork() predict as the parent, 2 LibTorch threads", "[model][fork]") {
  check_children_match_parent(2, 1);
}

TEST_CASE("children of fork() predict as the parent, 2 inference threads", "[model][fork]") {
  check_children_match_parent(1, 2);
}

TEST_CASE("a model not yet loaded at fork() loads in the child, not in the parent", "[model][fork]") {
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  dermal::LoadOptions load;
  load.preload = false;
  dermal::Model model(kModels + "/tiny.pt", load);
  std::string failure;
  const std::vector<float> got = collect(fork_child(model, photo, 1), failure);
  CHECK_FALSE(model.loaded());
  dermal::Model reference(kModels + "/tiny.pt");  // after the fork: see the top of the file
  REQUIRE(failure == "");
  CHECK(max_difference(got, fingerprint(reference, photo)) <= 1e-6f);
}

TEST_CASE("fork() while other threads predict waits for their requests", "[model][fork]") {
  dermal::LoadOptions load;
  load.max_concurrent = 2;
  dermal::Model model(kModels + "/tiny_512.pt", load);
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  const std::vector<float> served_before = fingerprint(model, photo, kGradCamSurvivesFork);
  std::atomic<bool> stop{false};
  std::atomic<int> served{0};
  std::vector<std::thread> hosts;
  for (int t = 0; t < 3; ++t)
    hosts.emplace_back([&] {
      while (!stop) served += max_difference(fingerprint(model, photo, kGradCamSurvivesFork), served_before) <= 1e-6f;
    });
  std::vector<std::string> failures(5);
  std::vector<std::vector<float>> results;
  for (std::string& failure : failures) results.push_back(collect(fork_child(model, photo, 1), failure));
  stop = true;
  for (std::thread& host : hosts) host.join();
  CHECK(served > 0);
  const std::vector<float> expected = fingerprint(model, photo);
  for (std::size_t i = 0; i < failures.size(); ++i) {
    INFO("fork " << i);
    REQUIRE(failures[i] == "");
    CHECK(max_difference(results[i], expected) <= 1e-6f);
  }
}

TEST_CASE("a child forked after its parent ran Grad-CAM predicts, and its Grad-CAM works on LibTorch 1.x, fails on 2.x",
          "[model][fork]") {
  dermal::Model model(kModels + "/tiny.pt");
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  const std::vector<float> expected = fingerprint(model, photo, false);
  fingerprint(model, photo);  // a backward pass in the parent
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // writes 1 if Grad-CAM threw dermal::Error naming fork, then the probabilities without it
    close(fds[0]);
    float refused = 0;
    try {
      fingerprint(model, photo);
    } catch (const dermal::Error& e) {
      refused = std::string(e.what()).find("fork") != std::string::npos;
    } catch (...) {
    }
    int status = 0;
    try {
      std::vector<float> numbers{refused};
      const std::vector<float> probabilities = fingerprint(model, photo, false);
      numbers.insert(numbers.end(), probabilities.begin(), probabilities.end());
      const std::size_t bytes = numbers.size() * sizeof(float);
      status = write(fds[1], numbers.data(), bytes) == static_cast<ssize_t>(bytes) ? 0 : 3;
    } catch (...) {
      status = 2;
    }
    _exit(status);
  }
  close(fds[1]);
  std::string failure;
  std::vector<float> got = collect({pid, fds[0]}, failure);
  REQUIRE(failure == "");
  REQUIRE_FALSE(got.empty());
  CHECK(got[0] == (kGradCamSurvivesFork ? 0.0f : 1.0f));
  got.erase(got.begin());
  CHECK(max_difference(got, expected) <= 1e-6f);
}
