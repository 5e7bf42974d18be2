#include "model/onednn_ops_check.hpp"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <thread>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace dermal {

namespace {

// The child gives up after this long (a lock held by another thread at
// fork() would otherwise keep it waiting for ever).
constexpr auto kChildTimeLimit = std::chrono::seconds(30);

// What an optimised graph does with oneDNN tensors, on small ones; the
// plain + plain add is the one measured to crash.
void run_onednn_ops() {
  at::set_num_threads(1);  // the child's own: its parent's OpenMP threads do not exist here
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::rand({1, 8, 8, 8});
  const torch::Tensor plain = x.to_mkldnn();
  const torch::Tensor blocked =
      at::mkldnn_convolution(plain, torch::rand({8, 8, 3, 3}).to_mkldnn(), {}, {1, 1}, {1, 1}, {1, 1}, 1);
  const torch::Tensor sum = torch::relu(blocked) + blocked + plain;
  (sum + (plain + plain)).to_dense();
}

[[noreturn]] void child(bool crash) {
  // The default action for a fatal signal (not the host's handlers, which
  // might print or report a crash), and no core file.
  for (const int signal : {SIGFPE, SIGSEGV, SIGILL, SIGBUS, SIGABRT}) std::signal(signal, SIG_DFL);
  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  try {
    if (crash) std::raise(SIGFPE);
    run_onednn_ops();
  } catch (...) {
    _exit(3);
  }
  _exit(0);
}

}  // namespace

OnednnOpsCheck check_onednn_ops(bool crash) {
  const pid_t pid = fork();
  if (pid < 0) return {false, fmt::format("could not be run: fork() failed: {}", std::strerror(errno))};
  if (pid == 0) child(crash);
  const auto deadline = std::chrono::steady_clock::now() + kChildTimeLimit;
  int status = 0;
  for (;;) {
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR)  // e.g. the host reaps children itself (SIGCHLD ignored)
      return {false, fmt::format("could not be waited for: waitpid() failed: {}", std::strerror(errno))};
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return {false, fmt::format("did not finish within {} s", kChildTimeLimit.count())};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {true, "ran"};
  if (WIFSIGNALED(status))
    return {false, fmt::format("were killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)))};
  return {false, fmt::format("failed (a LibTorch error, exit status {})", WEXITSTATUS(status))};
}

const OnednnOpsCheck& onednn_ops_check() {
  static const OnednnOpsCheck check = check_onednn_ops();
  return check;
}

}  // namespace dermal
