#pragma once

#include <cstddef>

namespace iperf3proxy::fuzz {

// Records the largest single heap allocation made while it is alive (one at a time, one thread).
// In the libFuzzer build it uses the sanitizer allocator's malloc hook, so AddressSanitizer keeps
// its own operator new; in the replay build (and in proto_test, which uses it too) it replaces the
// global operator new. It lives in its own file so no caller sees both the replaced operators and
// an allocation at once (GCC 12 otherwise misreports a new/free mismatch).
class AllocWatch {
 public:
  AllocWatch();
  ~AllocWatch();
  AllocWatch(const AllocWatch&) = delete;
  AllocWatch& operator=(const AllocWatch&) = delete;

  std::size_t largest() const;
};

}  // namespace iperf3proxy::fuzz
