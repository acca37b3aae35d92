#include "log/reopenable_file_sink.h"

#include <cerrno>
#include <cstring>

namespace iperf3proxy::log {

std::FILE* ReopenableFileSink::openForAppend(const std::string& path, std::string* error) {
  // "e": close-on-exec, so the embedded iperf3 servers do not inherit the log.
  std::FILE* file = std::fopen(path.c_str(), "ae");
  if (file == nullptr) {
    *error = path + ": " + std::strerror(errno);
  }
  return file;
}

bool ReopenableFileSink::open(const std::string& path, std::string* error) {
  std::FILE* file = openForAppend(path, error);
  if (file == nullptr) {
    return false;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  path_ = path;
  if (file_ != nullptr) {
    (void)std::fclose(file_);
  }
  file_ = file;
  return true;
}

bool ReopenableFileSink::reopen(std::string* error) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::FILE* file = openForAppend(path_, error);
  if (file == nullptr) {
    return false;
  }
  if (file_ != nullptr) {
    (void)std::fclose(file_);
  }
  file_ = file;
  return true;
}

ReopenableFileSink::~ReopenableFileSink() {
  if (file_ != nullptr) {
    (void)std::fclose(file_);
  }
}

void ReopenableFileSink::sink_it_(const spdlog::details::log_msg& msg) {
  if (file_ == nullptr) {
    return;
  }
  spdlog::memory_buf_t formatted;
  formatter_->format(msg, formatted);
  // A full disk loses lines, never the proxy: nothing to do about a short write here.
  (void)std::fwrite(formatted.data(), 1, formatted.size(), file_);
}

void ReopenableFileSink::flush_() {
  if (file_ != nullptr) {
    (void)std::fflush(file_);
  }
}

}  // namespace iperf3proxy::log
