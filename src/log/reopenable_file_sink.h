#pragma once

#include <cstdio>
#include <mutex>
#include <string>

#include <spdlog/sinks/base_sink.h>

namespace iperf3proxy::log {

// --logfile PATH: appends every line to PATH, and reopens PATH on request (SIGHUP), so that
// logrotate can rename the file and the next lines go to a new one at the old name. Safe to use
// from several threads (spdlog's sink mutex; reopen() takes it too).
class ReopenableFileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // Opens PATH for appending (created 0644 if missing). False with `error` set if it cannot.
  bool open(const std::string& path, std::string* error);

  // Opens the path again and switches to it; until that succeeds the old file stays in use.
  // False with `error` set if it cannot be opened.
  bool reopen(std::string* error);

  ~ReopenableFileSink() override;

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override;

 private:
  static std::FILE* openForAppend(const std::string& path, std::string* error);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace iperf3proxy::log
