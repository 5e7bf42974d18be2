// The C allocator: handing freed memory back, and the opt-in process-wide
// settings of LoadOptions::tune_allocator. Without glibc these do nothing.
#pragma once

namespace dermal {

// Hands freed heap memory back to the system (glibc's malloc_trim(0)).
void release_free_memory();

// While it lives, with `enabled`: glibc returns every freed block of 128 KiB
// or more to the system at once (its adaptive mmap threshold would otherwise
// keep freed copies of weights resident during a load). When it ends, both
// M_MMAP_THRESHOLD and M_TRIM_THRESHOLD are 32 MiB for the process, the
// ceiling where the adaptive threshold settles: activations come from the
// heap, and free() does not hand the heap top back in the middle of a
// request only for the next layer to fault it in again. Process-wide; only
// when the host asked for it (LoadOptions::tune_allocator).
class LoadingAllocatorSettings {
 public:
  explicit LoadingAllocatorSettings(bool enabled);
  ~LoadingAllocatorSettings();
  LoadingAllocatorSettings(const LoadingAllocatorSettings&) = delete;
  LoadingAllocatorSettings& operator=(const LoadingAllocatorSettings&) = delete;

 private:
  bool enabled_;
};

}  // namespace dermal
