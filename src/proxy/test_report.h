#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "proto/test_params.h"
#include "proxy/close_reason.h"

namespace iperf3proxy::proxy {

// Everything the proxy tells about one test when it ends: the proxy's access log record.
struct TestSummary {
  std::string id;                           // first 8 characters of the cookie
  std::string client;                       // ADDR:PORT of the client's control connection
  std::optional<proto::TestParams> params;  // absent if the test ended before its parameters
  std::string backend;                      // the server that ran it, or empty
  std::uint64_t bytes_up = 0;               // client -> server, test data
  std::uint64_t bytes_down = 0;             // server -> client, test data
  double seconds = 0;
  double queued_seconds = 0;  // of which waiting for a free backend
  CloseReason reason = CloseReason::Completed;
  std::string detail;
  int roles_repaired = 0;
  int out_of_order = 0;
  bool roles_guessed = false;
  bool backend_role_mismatch = false;
  std::uint64_t udp_dropped = 0;
  int backend_attempts = 0;  // backends that could not take the test before one did
};

// The one "test ended" line, e.g.
//   [s:kpdjmnui] test ended: client=192.0.2.7:33238 mode=tcp bidir streams=1 up_bytes=856934396
//   down_bytes=1081177033 duration=2.02s reason=completed roles_repaired=1 out_of_order=2
//   backend=127.0.0.1:40211
// Tests parse it (integration/harness.py): keep the order of the fields.
std::string formatTestEnded(const TestSummary& summary);

// Whether the line is routine (info) or worth a warning.
bool isRoutineEnd(CloseReason reason);

// The same record as JSON fields (--log-format json), e.g.
//   "event":"test-ended","client":"192.0.2.7:33238","client_version":"3.12","protocol":"tcp",
//   "mode":"bidir","streams":1,"duration_s":2.02,"bytes_up":856934396,"bytes_down":1081177033,
//   "roles_repaired":1,"out_of_order":2,"backend":"127.0.0.1:40211","reason":"completed",...
// Every field is always there (null where unknown: a test that ended before its parameters has
// no client_version, protocol, mode or streams), so that log pipelines see one schema.
nlohmann::ordered_json testEndedFields(const TestSummary& summary);

// Logs the test-ended record: the text line, or with --log-format json the message
// "test ended" with testEndedFields(). Info for a routine end, else a warning.
void logTestEnded(const TestSummary& summary);

}  // namespace iperf3proxy::proxy
