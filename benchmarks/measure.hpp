// What the benchmark programs share: peak-RSS resets, timing, medians, the
// photo file and the "[--threads N] [--repeats N] [--warmup N]" options.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace measure {

using Clock = std::chrono::steady_clock;

// Restarts the kernel's VmHWM from the current resident set.
inline void reset_peak() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";
}

inline double mb(std::uint64_t bytes) { return bytes / 1e6; }

// The resident set as a container's memory limit counts it: anonymous
// (heap, weights) and file-backed (mapped libraries), in MB, from
// /proc/self/status.
struct Resident {
  double anon_mb = 0;
  double file_mb = 0;
};

inline Resident resident() {
  std::ifstream status("/proc/self/status");
  Resident r;
  std::string line;
  while (std::getline(status, line)) {
    const auto field_mb = [&](const char* name, double& value) {
      if (line.rfind(name, 0) == 0) value = std::stod(line.substr(std::string(name).size())) * 1024 / 1e6;  // kB
    };
    field_mb("RssAnon:", r.anon_mb);
    field_mb("RssFile:", r.file_mb);
  }
  return r;
}

inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

inline double since_ms(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// CPU time of the whole process (every thread, user and system), in ms: what a
// request costs the machine, where latency is what it costs the caller.
inline double process_cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

inline std::vector<std::uint8_t> read_file(const char* path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

struct Options {
  int threads = 1;
  int repeats = 15;
  int warmup = 3;
  int release_memory_after_predict = 1;  // LoadOptions::release_memory_after_predict (dermal_stages)
  int optimise = 1;                      // 0: frozen graphs, not optimised for inference (bare_forward, dermal_stages)
};

// Reads "PROGRAM MODEL PHOTO [options]"; false (and a message) when MODEL or
// PHOTO is missing or an option is unknown.
inline bool parse_options(int argc, char** argv, const char* program, Options& options) {
  if (argc < 3) {
    fmt::print(stderr, "usage: {} MODEL PHOTO [--threads N] [--repeats N] [--warmup N] "
                       "[--release-memory-after-predict 0|1] [--optimise 0|1]\n", program);
    return false;
  }
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int value = std::stoi(argv[i + 1]);
    if (flag == "--threads") options.threads = value;
    else if (flag == "--repeats") options.repeats = value;
    else if (flag == "--warmup") options.warmup = value;
    else if (flag == "--release-memory-after-predict") options.release_memory_after_predict = value;
    else if (flag == "--optimise") options.optimise = value;
    else {
      fmt::print(stderr, "{}: unknown option {}\n", program, flag);
      return false;
    }
  }
  return true;
}

}  // namespace measure
