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
      "tests ended:{} | connections refused: garbage={} no-cookie-in-time={} closed-early={} "
      "evicted={} tests-refused={} | udp dropped: no-test={} ambiguous={} not-connect={}",
      tests.empty() ? " none" : tests, refused_garbage, refused_timeout, refused_closed,
      evicted_pending, refused_tests, udp_no_test, udp_ambiguous, udp_not_connect);
}

}  // namespace iperf3proxy::proxy
