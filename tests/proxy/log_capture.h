#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

namespace iperf3proxy::proxy::testing {

// While it lives, every line logged through spdlog's default logger (at every level) is kept
// here, with its level, instead of going to stderr; the previous logger comes back after.
class LogCapture {
 public:
  struct Line {
    spdlog::level::level_enum level;
    std::string text;
  };

  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::vector<Line> lines() const;

  // Lines whose text contains `needle`, optionally only of one level.
  std::vector<Line> matching(const std::string& needle) const;
  std::vector<Line> matching(const std::string& needle, spdlog::level::level_enum level) const;

 private:
  class Sink : public spdlog::sinks::base_sink<std::mutex> {
   public:
    std::vector<Line> lines() {
      std::lock_guard lock(mutex_);
      return lines_;
    }

   protected:
    void sink_it_(const spdlog::details::log_msg& message) override {
      lines_.push_back(
          Line{message.level, std::string(message.payload.begin(), message.payload.end())});
    }

    void flush_() override {}

   private:
    std::vector<Line> lines_;
  };

  std::shared_ptr<Sink> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

}  // namespace iperf3proxy::proxy::testing
