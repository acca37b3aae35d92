#include "proxy/test_report.h"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include "log/record_fields.h"

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

nlohmann::ordered_json testEndedFields(const TestSummary& s) {
  nlohmann::ordered_json fields;
  fields["event"] = "test-ended";
  fields["client"] = s.client;
  fields["client_version"] = nullptr;
  fields["protocol"] = nullptr;
  fields["mode"] = nullptr;
  fields["streams"] = nullptr;
  if (s.params) {
    fields["client_version"] = s.params->client_version;
    fields["protocol"] = proto::transportName(s.params->transport);
    fields["mode"] = proto::testModeName(s.params->mode);
    fields["streams"] = s.params->streams_per_direction;
  }
  // Milliseconds are plenty, and keep the number short.
  fields["duration_s"] = static_cast<double>(static_cast<std::int64_t>(s.seconds * 1000)) / 1000;
  fields["queued_s"] =
      static_cast<double>(static_cast<std::int64_t>(s.queued_seconds * 1000)) / 1000;
  fields["bytes_up"] = s.bytes_up;
  fields["bytes_down"] = s.bytes_down;
  fields["roles_repaired"] = s.roles_repaired;
  fields["out_of_order"] = s.out_of_order;
  fields["roles_guessed"] = s.roles_guessed;
  fields["backend_role_mismatch"] = s.backend_role_mismatch;
  fields["udp_dropped"] = s.udp_dropped;
  fields["backend"] =
      s.backend.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(s.backend);
  fields["backends_skipped"] = s.backend_attempts;
  fields["reason"] = closeReasonName(s.reason);
  fields["detail"] = s.detail;
  return fields;
}

void logTestEnded(const TestSummary& summary) {
  const auto level = isRoutineEnd(summary.reason) ? spdlog::level::info : spdlog::level::warn;
  if (!log::jsonLines()) {
    spdlog::log(level, "{}", formatTestEnded(summary));
    return;
  }
  const log::ScopedFields fields(testEndedFields(summary));
  spdlog::log(level, "[s:{}] test ended", summary.id);
}

bool isRoutineEnd(CloseReason reason) {
  return reason == CloseReason::Completed || reason == CloseReason::ServerBusy ||
         reason == CloseReason::NoBackendFree || reason == CloseReason::QueueTimeout;
}

}  // namespace iperf3proxy::proxy
