#pragma once

#include <cstddef>

namespace iperf3proxy::proto {

// Records the largest single heap allocation made while it is alive, so a test can check that
// the codec never allocates what a peer merely announced. Backed by a replacement of the global
// operator new in allocation_probe.cc (a separate file, so no caller sees both the replaced
// operators and the allocation at once: GCC 12 otherwise misreports a new/free mismatch).
class AllocationProbe {
 public:
  AllocationProbe();
  ~AllocationProbe();
  AllocationProbe(const AllocationProbe&) = delete;
  AllocationProbe& operator=(const AllocationProbe&) = delete;

  std::size_t largest() const;
};

}  // namespace iperf3proxy::proto
