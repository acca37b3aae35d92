#include "proxy/stats.h"

#include <spdlog/fmt/fmt.h>

namespace iperf3proxy::proxy {

std::string ProxyStats::toString() const {
  std::string tests;
  for (std::size_t i = 0; i < tests_ended.size(); ++i) {
    if (tests_ended[i] > 0) {
      tests += fmt::format(" {}={}", closeReasonName(static_cast<CloseReason>(i)), tests_ended[i]);
    }
  }
  return fmt::format(
      "tests ended:{} | tests queued={} refused-busy={} (per-client={}) | connections refused: "
      "denied={} garbage={} no-cookie-in-time={} closed-early={} evicted={} stale={} | udp "
      "dropped: no-test={} not-connect={}",
      tests.empty() ? " none" : tests, queued_tests, refused_tests, refused_per_client,
      refused_denied, refused_garbage, refused_timeout, refused_closed, evicted_pending,
      stale_streams, udp_no_test, udp_not_connect);
}

}  // namespace iperf3proxy::proxy
