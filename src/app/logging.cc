#include "app/logging.h"

#include <unistd.h>

#include <memory>
#include <mutex>

#include <event2/event.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "log/json_formatter.h"
#include "log/record_fields.h"
#include "log/reopenable_file_sink.h"

namespace iperf3proxy::app {
namespace {

constexpr const char* kTextPattern = "%Y-%m-%dT%H:%M:%S.%e %l %v";

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

// Error lines, message only, to an fd while the proxy starts (see reportStartupErrorsTo).
class StartupErrorSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  void setFd(int fd) {
    std::lock_guard<std::mutex> lock(mutex_);
    fd_ = fd;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (fd_ == -1) {
      return;
    }
    std::string line(msg.payload.data(), msg.payload.size());
    line = "iperf3-proxy: " + line + "\n";
    // A pipe or a terminal; a short write loses the end of an error line, nothing else.
    (void)!::write(fd_, line.data(), line.size());
  }

  void flush_() override {}

 private:
  int fd_ = -1;
};

std::shared_ptr<log::ReopenableFileSink> file_sink;
std::shared_ptr<StartupErrorSink> startup_sink;

}  // namespace

bool setUpLogging(const std::string& level, const ServiceOptions& options, std::string* error) {
  spdlog::sink_ptr output;
  if (options.logfile) {
    file_sink = std::make_shared<log::ReopenableFileSink>();
    if (!file_sink->open(*options.logfile, error)) {
      *error = "cannot open --logfile " + *error;
      file_sink.reset();
      return false;
    }
    output = file_sink;
  } else {
    output = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  }
  if (options.log_format == LogFormat::Json) {
    output->set_formatter(std::make_unique<log::JsonFormatter>());
    log::setJsonLines(true);
  } else {
    output->set_formatter(std::make_unique<spdlog::pattern_formatter>(kTextPattern));
  }
  startup_sink = std::make_shared<StartupErrorSink>();
  startup_sink->set_level(spdlog::level::err);
  auto logger = std::make_shared<spdlog::logger>("iperf3-proxy",
                                                 spdlog::sinks_init_list{output, startup_sink});
  logger->set_level(spdlog::level::from_str(level));
  // Every line matters when something goes wrong; the volume is a few lines per test.
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  event_set_log_callback(&libeventLog);
  return true;
}

void reopenLogFile() {
  if (!file_sink) {
    return;
  }
  std::string error;
  if (file_sink->reopen(&error)) {
    spdlog::info("reopened the log file (SIGHUP)");
  } else {
    spdlog::error("cannot reopen --logfile {}; still writing to the old file", error);
  }
}

void reportStartupErrorsTo(int fd) {
  if (startup_sink) {
    startup_sink->setFd(fd);
  }
}

void endStartupReport() {
  if (startup_sink) {
    startup_sink->setFd(-1);
  }
}

}  // namespace iperf3proxy::app
