#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proto/test_params.h"
#include "proxy/close_reason.h"
#include "proxy/settings.h"

namespace iperf3proxy::proxy {

// A test the proxy will not start: the SERVER_ERROR code the client is told (one that client's
// version prints a message for) and the reason for the log.
struct TestRefusal {
  std::int32_t i_errno;
  CloseReason reason;
  std::string detail;
};

// The proxy's own rules for a test (--max-duration, --max-streams, --max-bitrate), checked on
// its parameters before the server sees them. Pure.
std::optional<TestRefusal> checkTestPolicy(const proto::TestParams& params,
                                           const Limits& limits,
                                           const EdgePolicy& policy);

// Whether a client that calls itself `client_version` (the params' "3.12", "3.17.1", "3.21+")
// is at least major.minor. An absent or unreadable version counts as old: it then gets a code
// every version knows.
bool clientAtLeast(std::string_view client_version, int major, int minor);

}  // namespace iperf3proxy::proxy
