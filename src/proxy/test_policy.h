#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "proto/test_params.h"
#include "proxy/close_reason.h"
#include "proxy/settings.h"

namespace iperf3proxy::proxy {

// A test the proxy will not start: the SERVER_ERROR code the client is told (every iperf3 client
// prints a message for it) and the reason for the log.
struct TestRefusal {
  std::int32_t i_errno;
  CloseReason reason;
  std::string detail;
};

// The proxy's own rules for a test, checked on its parameters before the server sees them. Pure.
std::optional<TestRefusal> checkTestPolicy(const proto::TestParams& params, const Limits& limits);

}  // namespace iperf3proxy::proxy
