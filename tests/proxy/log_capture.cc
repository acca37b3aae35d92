#include "log_capture.h"

namespace iperf3proxy::proxy::testing {

LogCapture::LogCapture() : sink_(std::make_shared<Sink>()), previous_(spdlog::default_logger()) {
  auto logger = std::make_shared<spdlog::logger>("capture", sink_);
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

LogCapture::~LogCapture() {
  spdlog::set_default_logger(previous_);
}

std::vector<LogCapture::Line> LogCapture::lines() const {
  return sink_->lines();
}

std::vector<LogCapture::Line> LogCapture::matching(const std::string& needle) const {
  std::vector<Line> found;
  for (Line& line : sink_->lines()) {
    if (line.text.find(needle) != std::string::npos) {
      found.push_back(std::move(line));
    }
  }
  return found;
}

std::vector<LogCapture::Line> LogCapture::matching(const std::string& needle,
                                                   spdlog::level::level_enum level) const {
  std::vector<Line> found;
  for (Line& line : matching(needle)) {
    if (line.level == level) {
      found.push_back(std::move(line));
    }
  }
  return found;
}

}  // namespace iperf3proxy::proxy::testing
