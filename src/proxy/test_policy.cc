#include "proxy/test_policy.h"

#include <spdlog/fmt/fmt.h>

#include "proto/wire.h"

namespace iperf3proxy::proxy {

std::optional<TestRefusal> checkTestPolicy(const proto::TestParams& params, const Limits& limits) {
  if (params.transport == proto::Transport::Sctp) {
    return TestRefusal{proto::ierrno::kProtocol, CloseReason::UnsupportedTest,
                       "SCTP cannot be carried by a TCP/UDP proxy"};
  }
  const long cap = limits.max_duration_s;
  // Both numbers come from the client: compared without adding them, so nothing can overflow.
  const auto positive = [](std::int64_t value) {
    return value < 0 ? std::int64_t{0} : value;
  };
  const std::int64_t duration = positive(params.duration_s);
  const std::int64_t omit = positive(params.omit_s);
  if (cap > 0 && (duration > cap || omit > cap - duration)) {
    // Refused before the server sees the parameters, the way 3.20+ servers refuse a test above
    // --server-max-duration.
    return TestRefusal{proto::ierrno::kDuration, CloseReason::DurationExceeded,
                       fmt::format("-t {} -O {} is above --max-duration {}", params.duration_s,
                                   params.omit_s, cap)};
  }
  return std::nullopt;
}

}  // namespace iperf3proxy::proxy
