#include "app/logging.h"

#include <event2/event.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace iperf3proxy::app {
namespace {

void libeventLog(int severity, const char* message) {
  switch (severity) {
    case EVENT_LOG_DEBUG:
      spdlog::debug("libevent: {}", message);
      break;
    case EVENT_LOG_MSG:
      spdlog::info("libevent: {}", message);
      break;
    case EVENT_LOG_WARN:
      spdlog::warn("libevent: {}", message);
      break;
    default:
      spdlog::error("libevent: {}", message);
      break;
  }
}

}  // namespace

void setUpLogging(const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("iperf3-proxy");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  logger->set_level(spdlog::level::from_str(level));
  // Every line matters when something goes wrong; the volume is a few lines per test.
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  event_set_log_callback(&libeventLog);
}

}  // namespace iperf3proxy::app
