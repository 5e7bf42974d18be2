#include "model/allocator.hpp"

#include <cstdlib>  // defines __GLIBC__ where the C library is glibc

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace dermal {

namespace {

#ifdef __GLIBC__
void set_thresholds(int bytes) {
  mallopt(M_MMAP_THRESHOLD, bytes);
  mallopt(M_TRIM_THRESHOLD, bytes);
}
#else
void set_thresholds(int) {}
#endif

constexpr int kWhileLoading = 128 * 1024;
constexpr int kAfterLoading = 32 * 1024 * 1024;

}  // namespace

void release_free_memory() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

LoadingAllocatorSettings::LoadingAllocatorSettings(bool enabled) : enabled_(enabled) {
  if (enabled_) set_thresholds(kWhileLoading);
}

LoadingAllocatorSettings::~LoadingAllocatorSettings() {
  if (enabled_) set_thresholds(kAfterLoading);
}

}  // namespace dermal
