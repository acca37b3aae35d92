#pragma once

#include <cstddef>
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
  // Longest hold of the client's TEST_END while its test data reaches the server (the upload
  // drain, docs/PROTOCOL.md §5.1); when it runs out TEST_END goes on regardless.
  long upload_drain_ms = 2'000;
  // Beyond --max-duration (plus omit), how long a test may run before the proxy stops it.
  long duration_grace_ms = 10'000;
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
  // Receive coalescing for busy UDP flows (DatagramRelay): they are read every this many
  // microseconds instead of on readiness; 0 = always on readiness.
  int udp_poll_us = 250;
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

// Deadlines and limits that are not options: each set by what iperf3 does or by what the proxy
// needs, with the reason beside it. Kept here so that every wait and cap of the proxy is in one
// file (the options are the structs above).
namespace fixed {

// Control connection: above this many queued bytes a relay stops reading its source until the
// destination drains (results JSON with --get-server-output can be large; nothing else is).
inline constexpr std::size_t kControlHighWatermarkBytes = 1 << 20;
// Control connection: what the client may have sent after TEST_END while it is held (the codec
// allows only IPERF_DONE and CLIENT_TERMINATE there, so more is a client the codec missed).
inline constexpr std::size_t kControlHeldBytes = 64 * 1024;
// TCP data: after an error on one side, how long the other direction may take to deliver what
// it holds (a direct connection would deliver it too).
inline constexpr long kFlushAfterErrorMs = 2'000;
// UDP data: longest pause for a full destination before what is held is dropped.
inline constexpr long kUdpFullPauseMs = 100;

// Backends: between connect attempts while a server re-listens after a test (milliseconds).
inline constexpr long kRelistenRetryMs = 20;
// Backends: how often a down backend is checked, and how long one check may take.
inline constexpr long kProbeIntervalMs = 1'000;
inline constexpr long kProbeDeadlineMs = 2'000;
// Embedded servers: how long each may take to listen at start (the proxy exits if one does not).
inline constexpr long kEmbeddedStartDeadlineMs = 10'000;
// Embedded servers: restart delay after a death, doubled after each quick death (one within
// kEmbeddedQuickDeathMs of its start) up to the maximum, so a server that cannot start does not
// spin.
inline constexpr long kEmbeddedRestartDelayMs = 500;
inline constexpr long kEmbeddedMaxRestartDelayMs = 10'000;
inline constexpr long kEmbeddedQuickDeathMs = 2'000;

// Front: after EMFILE/ENFILE the listener rests this long, then accepts again.
inline constexpr long kAcceptPauseMs = 200;
// Front: how often the counters line is logged (only when something changed).
inline constexpr long kStatsIntervalMs = 60'000;

}  // namespace fixed

struct ProxySettings {
  Timeouts timeouts;
  Limits limits;
  EdgePolicy policy;  // every limit 0: off
  proto::CodecLimits codec;
  DataPath data_path;
};

}  // namespace iperf3proxy::proxy
