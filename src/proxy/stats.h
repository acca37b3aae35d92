#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "proxy/close_reason.h"

namespace iperf3proxy::proxy {

// What the front counts: every refused connection, dropped datagram and ended test, by reason.
// Logged on a change every minute and at exit, so an operator can see what an open port attracts.
// Kept on the front's loop only (workers report to it).
struct ProxyStats {
  std::uint64_t refused_garbage = 0;  // first bytes were not a cookie
  std::uint64_t refused_timeout = 0;  // no cookie before --cookie-timeout
  std::uint64_t refused_closed = 0;   // closed (or failed) before a whole cookie
  std::uint64_t evicted_pending = 0;  // dropped to stay within --max-pending
  std::uint64_t refused_tests = 0;    // answered "busy" at once (no backend, --max-tests, drain)
  std::uint64_t stale_streams = 0;    // data connections of a test that had already ended
  std::uint64_t queued_tests = 0;     // tests that waited for a free backend
  std::uint64_t udp_no_test = 0;      // datagram from an address with no UDP test setting up
  std::uint64_t udp_not_connect = 0;  // a new flow not opened by a connect message
  std::array<std::uint64_t, kCloseReasonCount> tests_ended{};

  // The edge policy at the front (the per-test rules count as tests ended, by their reason).
  std::uint64_t refused_per_client = 0;  // tests answered "busy" by --max-tests-per-client
  std::uint64_t refused_denied = 0;      // connections refused by --allow/--deny

  std::string toString() const;
};

}  // namespace iperf3proxy::proxy
