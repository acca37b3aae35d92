#pragma once

#include <memory>
#include <string>

namespace iperf3proxy::app {

// -I/--pidfile PATH: the proxy's process id, for init scripts and `kill $(cat PATH)`. Written at
// startup (by the daemon itself with -D), removed at exit.
class PidFile {
 public:
  // Writes this process's id to `path`. Fails (nullptr, `error` set) if the file cannot be
  // written, or if it names another process that is alive: another proxy with the same pidfile
  // (as iperf3 refuses, too).
  static std::unique_ptr<PidFile> create(const std::string& path, std::string* error);

  // Removes the file, if it still holds this process's id.
  ~PidFile();
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;

 private:
  explicit PidFile(std::string path) : path_(std::move(path)) {}

  std::string path_;
};

}  // namespace iperf3proxy::app
