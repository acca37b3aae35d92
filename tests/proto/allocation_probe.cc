#include "proto/allocation_probe.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {

std::atomic<bool> g_track_allocations{false};
std::atomic<std::size_t> g_largest_allocation{0};

}  // namespace

void* operator new(std::size_t size) {
  if (g_track_allocations.load(std::memory_order_relaxed)) {
    std::size_t largest = g_largest_allocation.load(std::memory_order_relaxed);
    while (size > largest && !g_largest_allocation.compare_exchange_weak(largest, size)) {
    }
  }
  if (void* memory = std::malloc(size == 0 ? 1 : size)) {
    return memory;
  }
  throw std::bad_alloc();
}

void operator delete(void* memory) noexcept {
  std::free(memory);
}

void operator delete(void* memory, std::size_t /*size*/) noexcept {
  std::free(memory);
}

namespace iperf3proxy::proto {

AllocationProbe::AllocationProbe() {
  g_largest_allocation = 0;
  g_track_allocations = true;
}

AllocationProbe::~AllocationProbe() {
  g_track_allocations = false;
}

std::size_t AllocationProbe::largest() const {
  return g_largest_allocation;
}

}  // namespace iperf3proxy::proto
