// Whether oneDNN's own tensor ops, which LibTorch's optimize_for_inference
// rewrites a graph into, run on this machine without killing the process.
#pragma once

#include <string>

namespace dermal {

// On a PVM guest that shows no CPU cache sizes, Debian 13's oneDNN 3.6
// raises SIGFPE (integer divide by zero) in its add of two plain-layout
// oneDNN tensors, whatever the ISA cap (docs/debian.md). A crash cannot be
// caught by the numerics probe, so the ops an optimised graph uses
// (to_mkldnn, convolution, ReLU, adds of plain and blocked tensors,
// to_dense) first run in a child process.
struct OnednnOpsCheck {
  bool ran = false;     // the child finished the ops
  std::string finding;  // what happened to the child, for messages ("ran", "were killed by signal 8 (...)", ...)
};

// The process's check: the first call forks a child (~0.1 s,
// docs/numerics-probe.md), later calls return its result. fork() waits for
// every model's requests and locks (model.cpp's fork handlers), so the first
// call must come from a thread that holds no model's lock and is not an
// inference thread: Model makes it on the host's thread before it hands a
// load to its threads.
const OnednnOpsCheck& onednn_ops_check();

// The check itself, anew each call. `crash` (tests only): the child raises
// SIGFPE before the ops, as the faulty oneDNN does.
OnednnOpsCheck check_onednn_ops(bool crash = false);

}  // namespace dermal
