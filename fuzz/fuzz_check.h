#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace iperf3proxy::fuzz {

// Reports a broken invariant and aborts: libFuzzer keeps the input as a crash, and the replay test
// fails with the input's name on its output.
[[noreturn]] inline void failInvariant(const char* file,
                                       int line,
                                       const char* condition,
                                       const std::string& detail) {
  std::fprintf(stderr, "%s:%d: invariant broken: %s\n  %s\n", file, line, condition,
               detail.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace iperf3proxy::fuzz

// FUZZ_CHECK(condition, detail): `detail` (anything a std::string can be built from) is evaluated
// only when the check fails.
#define FUZZ_CHECK(condition, detail)                                               \
  do {                                                                              \
    if (!(condition)) {                                                             \
      ::iperf3proxy::fuzz::failInvariant(__FILE__, __LINE__, #condition, (detail)); \
    }                                                                               \
  } while (false)
