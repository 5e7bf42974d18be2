// A model loaded before fork() serves requests in the children, as gunicorn's
// preload_app uses it: the children's results equal the parent's, whatever
// LibTorch's thread count, a fork during requests waits for them, and the
// parent goes on serving afterwards.
#include "catch2.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "dermal/dermal.hpp"
#include "read_bytes.hpp"

namespace {

const std::string kModels = DERMAL_MODEL_FIXTURES;
constexpr int kChildTimeoutMs = 120000;

// What a request returns, as numbers that cross a pipe.
std::vector<float> fingerprint(dermal::Model& model, const std::vector<std::uint8_t>& photo) {
  dermal::PredictOptions options;
  options.explain = true;
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
    } catch (...) {
      status = 2;
    }
    _exit(status);
  }
  close(fds[1]);
  return {pid, fds[0]};
}

// Reads a child's fingerprint and its exit; a child that has not finished
// within the timeout is killed and reported as hung.
std::vector<float> collect(const Child& child, std::size_t count, std::string& failure) {
  std::vector<float> numbers(count);
  auto* bytes = reinterpret_cast<char*>(numbers.data());
  std::size_t got = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kChildTimeoutMs);
  while (got < count * sizeof(float)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd fd{child.pipe, POLLIN, 0};
    if (left.count() <= 0 || poll(&fd, 1, static_cast<int>(left.count())) <= 0) {
      failure = "child hung (no result within the timeout)";
      kill(child.pid, SIGKILL);
      break;
    }
    const ssize_t n = read(child.pipe, bytes + got, count * sizeof(float) - got);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  close(child.pipe);
  int status = 0;
  waitpid(child.pid, &status, 0);
  if (failure.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    failure = WIFSIGNALED(status) ? "child killed by signal " + std::to_string(WTERMSIG(status))
                                  : "child exited with " + std::to_string(WEXITSTATUS(status));
  if (failure.empty() && got != count * sizeof(float)) failure = "child wrote a short result";
  return numbers;
}

float max_difference(const std::vector<float>& a, const std::vector<float>& b) {
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
  const std::vector<float> expected = fingerprint(model, photo);  // the parent's threads and pools now exist

  std::vector<Child> children;
  for (int i = 0; i < 3; ++i) children.push_back(fork_child(model, photo, 3));
  std::vector<std::string> failures(children.size());
  std::vector<std::vector<float>> results;
  for (std::size_t i = 0; i < children.size(); ++i) results.push_back(collect(children[i], expected.size(), failures[i]));
  INFO("threads " << torch_threads << ", max_concurrent " << max_concurrent);
  for (std::size_t i = 0; i < children.size(); ++i) {
    INFO("child " << i);
    REQUIRE(failures[i].empty());
    CHECK(max_difference(results[i], expected) <= 1e-6f);
  }
  CHECK(max_difference(fingerprint(model, photo), expected) <= 1e-6f);  // the parent serves on
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
  dermal::Model reference(kModels + "/tiny.pt");
  const std::vector<float> expected = fingerprint(reference, photo);
  dermal::LoadOptions load;
  load.preload = false;
  dermal::Model model(kModels + "/tiny.pt", load);
  std::string failure;
  const std::vector<float> got = collect(fork_child(model, photo, 1), expected.size(), failure);
  REQUIRE(failure.empty());
  CHECK(max_difference(got, expected) <= 1e-6f);
  CHECK_FALSE(model.loaded());
}

TEST_CASE("fork() while other threads predict waits for their requests", "[model][fork]") {
  dermal::LoadOptions load;
  load.max_concurrent = 2;
  dermal::Model model(kModels + "/tiny_512.pt", load);
  const std::vector<std::uint8_t> photo = read_bytes(kModels + "/tiny_input.png");
  const std::vector<float> expected = fingerprint(model, photo);
  std::atomic<bool> stop{false};
  std::atomic<int> served{0};
  std::vector<std::thread> hosts;
  for (int t = 0; t < 3; ++t)
    hosts.emplace_back([&] {
      while (!stop) served += max_difference(fingerprint(model, photo), expected) <= 1e-6f;
    });
  for (int i = 0; i < 5; ++i) {
    std::string failure;
    const std::vector<float> got = collect(fork_child(model, photo, 1), expected.size(), failure);
    INFO("fork " << i);
    REQUIRE(failure.empty());
    CHECK(max_difference(got, expected) <= 1e-6f);
  }
  stop = true;
  for (std::thread& host : hosts) host.join();
  CHECK(served > 0);
}
