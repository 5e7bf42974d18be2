#include <fstream>
#include <string>

#include "dermal/dermal.hpp"

namespace dermal {

// Reads "VmRSS:  1234 kB"-style lines from /proc/self/status; 0 where absent.
MemoryStatus memory_status() {
  MemoryStatus status;
  std::ifstream file("/proc/self/status");
  std::string key;
  while (file >> key) {
    std::uint64_t kilobytes = 0;
    if (key == "VmRSS:" && file >> kilobytes) status.current_rss_bytes = kilobytes * 1024;
    else if (key == "VmHWM:" && file >> kilobytes) status.peak_rss_bytes = kilobytes * 1024;
    file.ignore(256, '\n');
  }
  return status;
}

}  // namespace dermal
