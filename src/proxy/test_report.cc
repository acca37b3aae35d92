#include "proxy/test_report.h"

#include <spdlog/fmt/fmt.h>

namespace iperf3proxy::proxy {

std::string formatTestEnded(const TestSummary& s) {
  const std::string shape =
      s.params ? fmt::format("{} {} streams={}", proto::transportName(s.params->transport),
                             proto::testModeName(s.params->mode), s.params->streams_per_direction)
               : std::string("unknown");
  std::string extra;
  if (s.roles_guessed) {
    extra += " roles_guessed=yes";
  }
  if (s.backend_role_mismatch) {
    extra += " backend_role_mismatch=yes";
  }
  if (s.udp_dropped > 0) {
    extra += fmt::format(" udp_dropped={}", s.udp_dropped);
  }
  if (!s.backend.empty()) {
    extra += " backend=" + s.backend;
  }
  if (s.backend_attempts > 0) {
    extra += fmt::format(" backends_skipped={}", s.backend_attempts);
  }
  if (s.queued_seconds > 0) {
    extra += fmt::format(" queued={:.2f}s", s.queued_seconds);
  }
  return fmt::format(
      "[s:{}] test ended: client={} mode={} up_bytes={} down_bytes={} duration={:.2f}s "
      "reason={}{}{} roles_repaired={} out_of_order={}{}",
      s.id, s.client, shape, s.bytes_up, s.bytes_down, s.seconds, closeReasonName(s.reason),
      s.detail.empty() ? "" : ": ", s.detail, s.roles_repaired, s.out_of_order, extra);
}

bool isRoutineEnd(CloseReason reason) {
  return reason == CloseReason::Completed || reason == CloseReason::ServerBusy ||
         reason == CloseReason::NoBackendFree || reason == CloseReason::QueueTimeout;
}

}  // namespace iperf3proxy::proxy
