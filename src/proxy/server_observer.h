#pragma once

#include <chrono>
#include <string_view>

#include "proxy/close_reason.h"
#include "proxy/test_report.h"

namespace iperf3proxy::proxy {

// What the front tells an observer (the metrics, metrics/proxy_metrics.h) as it happens. Every
// call comes on the front's loop, in the order the front learns of the events: tests report to
// the front, so nothing here is called from a worker thread.
class ServerObserver {
 public:
  // A connection that never became part of a test.
  enum class RefusedConnection {
    NotACookie,     // its first bytes were not an iperf3 cookie
    CookieTimeout,  // no whole cookie before --cookie-timeout
    ClosedEarly,    // closed (or failed) before a whole cookie
    Evicted,        // dropped to stay within --max-pending
    TestEnded,      // a data connection of a test that had already ended
  };

  // A datagram on the shared UDP port that was not relayed.
  enum class DroppedDatagram {
    NoTest,             // no UDP test from that address was setting up streams
    NotConnectMessage,  // a new flow that did not open with iperf3's connect message
  };

  virtual ~ServerObserver() = default;

  virtual void connectionRefused(RefusedConnection why) = 0;
  virtual void datagramDropped(DroppedDatagram why) = 0;
  // A new test answered at the front without a session: "busy" (no backend free, --max-tests,
  // draining) or "cannot connect" (no backend up).
  virtual void testRefused(CloseReason reason) = 0;
  // A test reached TEST_RUNNING, `setup` after its control connection was accepted.
  virtual void testRunning(std::chrono::duration<double> setup) = 0;
  virtual void testEnded(const TestSummary& summary) = 0;
};

// Label values (metrics) for the two.
constexpr std::string_view refusedConnectionName(ServerObserver::RefusedConnection why) {
  using Why = ServerObserver::RefusedConnection;
  switch (why) {
    case Why::NotACookie:
      return "not-a-cookie";
    case Why::CookieTimeout:
      return "cookie-timeout";
    case Why::ClosedEarly:
      return "closed-early";
    case Why::Evicted:
      return "evicted";
    case Why::TestEnded:
      return "test-ended";
  }
  return "unknown";
}

constexpr std::string_view droppedDatagramName(ServerObserver::DroppedDatagram why) {
  return why == ServerObserver::DroppedDatagram::NoTest ? "no-test" : "not-connect-message";
}

}  // namespace iperf3proxy::proxy
