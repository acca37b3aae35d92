#pragma once

#include "proto/control_codec.h"

namespace iperf3proxy::proxy {

// Every waiting state has a deadline; these are their defaults (milliseconds).
struct Timeouts {
  long cookie_ms = 10'000;          // a new connection must show its 37-byte cookie
  long backend_connect_ms = 3'000;  // retrying refused connects while the server re-listens
  long stream_setup_ms = 10'000;    // CREATE_STREAMS until every data connection is paired
  long role_settle_ms = 3'000;      // TEST_RUNNING until every role is known; then best guess
  long idle_ms = 60'000;            // no byte moved on any connection of the test
  long end_linger_ms = 15'000;      // IPERF_DONE until both control legs have closed
};

// Resource limits; what a client sees when one is hit is in README.md ("Limits and failure
// behaviour").
struct Limits {
  int max_tests = 64;       // sessions at once; a new test beyond it is answered "busy"
  int max_pending = 512;    // connections that have not shown a cookie yet; the oldest is dropped
  long max_duration_s = 0;  // cap on -t (+ -O); 0 = no cap
  long drain_ms = 30'000;   // after SIGTERM: how long running tests may go on
};

struct ProxySettings {
  Timeouts timeouts;
  Limits limits;
  proto::CodecLimits codec;
};

}  // namespace iperf3proxy::proxy
