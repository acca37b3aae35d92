#include "fuzz/alloc_watch.h"

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <new>

#if defined(PROXY_LIBFUZZER)
#include <sanitizer/allocator_interface.h>
#endif

namespace {

std::atomic<bool> g_watching{false};
std::atomic<std::size_t> g_largest{0};

void noteAllocation(std::size_t size) {
  if (!g_watching.load(std::memory_order_relaxed)) {
    return;
  }
  std::size_t largest = g_largest.load(std::memory_order_relaxed);
  while (size > largest && !g_largest.compare_exchange_weak(largest, size)) {
  }
}

#if defined(PROXY_LIBFUZZER)
void mallocHook(const volatile void* /*memory*/, std::size_t size) {
  noteAllocation(size);
}

void freeHook(const volatile void* /*memory*/) {}

void installHookOnce() {
  // The sanitizer refuses a null hook, so the free hook is a no-op rather than nullptr.
  static const int installed = __sanitizer_install_malloc_and_free_hooks(mallocHook, freeHook);
  if (installed == 0) {
    std::fputs("alloc_watch: cannot install the sanitizer malloc hook\n", stderr);
    std::abort();
  }
}
#else
void installHookOnce() {}
#endif

}  // namespace

#if !defined(PROXY_LIBFUZZER)
void* operator new(std::size_t size) {
  noteAllocation(size);
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
#endif

namespace iperf3proxy::fuzz {

AllocWatch::AllocWatch() {
  installHookOnce();
  g_largest = 0;
  g_watching = true;
}

AllocWatch::~AllocWatch() {
  g_watching = false;
}

std::size_t AllocWatch::largest() const {
  return g_largest;
}

}  // namespace iperf3proxy::fuzz
