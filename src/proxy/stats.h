#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "proxy/close_reason.h"

namespace iperf3proxy::proxy {

// What the proxy counts: every refused connection, dropped datagram and ended test, by reason.
// Logged on a change every minute and at exit, so an operator can see what an open port attracts.
struct ProxyStats {
  std::uint64_t refused_garbage = 0;  // first bytes were not a cookie
  std::uint64_t refused_timeout = 0;  // no cookie before --cookie-timeout
  std::uint64_t refused_closed = 0;   // closed (or failed) before a whole cookie
  std::uint64_t evicted_pending = 0;  // dropped to stay within --max-pending
  std::uint64_t refused_tests = 0;    // --max-tests reached, or shutting down
  std::uint64_t udp_no_test = 0;      // datagram from an address with no UDP test
  std::uint64_t udp_ambiguous = 0;    // several tests from that address
  std::uint64_t udp_not_connect = 0;  // a new flow not opened by a connect message
  std::array<std::uint64_t, kCloseReasonCount> tests_ended{};

  std::string toString() const;
};

}  // namespace iperf3proxy::proxy
