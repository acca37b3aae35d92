#pragma once

#include <cstdint>

#include "proto/control_codec.h"
#include "proxy/address_policy.h"

namespace iperf3proxy::proxy {

// Every waiting state has a deadline; these are their defaults (milliseconds).
struct Timeouts {
  long cookie_ms = 10'000;          // a new connection must show its 37-byte cookie
  long backend_connect_ms = 3'000;  // connecting to a backend and hearing its first answer
  long queue_ms = 0;                // waiting for a free backend; 0 = answer "busy" at once
  long stream_setup_ms = 10'000;    // CREATE_STREAMS until every data connection is paired
  long role_settle_ms = 3'000;      // TEST_RUNNING until every role is known; then best guess
  long idle_ms = 60'000;            // no byte moved on any connection of the test
  long end_linger_ms = 15'000;      // IPERF_DONE until both control legs have closed
  // After a test ends (or an embedded server starts) the iperf3 server closes and re-opens its
  // listener: refused connects within this window are retried, not held against the backend.
  long relisten_grace_ms = 1'000;
  // How long a data connection that arrives after its test ended is recognised as such.
  long recent_cookie_ms = 60'000;
};

// Resource limits; what a client sees when one is hit is in README.md ("Limits and failure
// behaviour").
struct Limits {
  int max_tests = 64;         // tests at once, running or queued; beyond it "busy"
  int queue_length = 64;      // tests waiting for a free backend (with --queue-timeout)
  int max_pending = 512;      // connections that have not shown a cookie yet; the oldest is dropped
  long max_duration_s = 0;    // cap on -t (+ -O); 0 = no cap
  long drain_ms = 30'000;     // after SIGTERM: how long running tests may go on
  int recent_cookies = 4096;  // ended tests remembered (see Timeouts::recent_cookie_ms)
};

// The data path. bench/README.md has the measurements behind the defaults.
struct DataPath {
  // Bytes per splice pipe (two per TCP data connection). Larger pipes move more per system call;
  // what they hold at TEST_END is drained into the server before TEST_END follows.
  int pipe_size = 1 << 20;
};

// The edge policy: what a client may ask of the servers behind the proxy, for servers that cannot
// protect themselves (iperf3 has a bitrate limit only from 3.9, a duration limit from 3.20, and
// neither a stream limit nor an address filter). Each refusal happens before the test starts.
struct EdgePolicy {
  int max_streams = 0;                // data streams of one test (-P; twice -P with --bidir)
  std::uint64_t max_bitrate_bps = 0;  // -b x streams, as iperf3's --server-bitrate-limit sums it
  int max_tests_per_client = 0;       // running and waiting tests of one client address
  AddressPolicy access;               // --allow, --deny
};

struct ProxySettings {
  Timeouts timeouts;
  Limits limits;
  EdgePolicy policy;  // every limit 0: off
  proto::CodecLimits codec;
  DataPath data_path;
};

}  // namespace iperf3proxy::proxy
