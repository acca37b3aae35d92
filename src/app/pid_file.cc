#include "app/pid_file.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace iperf3proxy::app {
namespace {

// The process id in the file, if it holds one.
pid_t readPid(const std::string& path) {
  std::ifstream in(path);
  long pid = 0;
  if (!(in >> pid) || pid <= 0) {
    return 0;
  }
  return static_cast<pid_t>(pid);
}

}  // namespace

std::unique_ptr<PidFile> PidFile::create(const std::string& path, std::string* error) {
  const pid_t previous = readPid(path);
  if (previous > 0 && previous != ::getpid() && (::kill(previous, 0) == 0 || errno == EPERM)) {
    *error = "--pidfile " + path + " names process " + std::to_string(previous) +
             ", which is running: another proxy with the same pidfile?";
    return nullptr;
  }
  std::ofstream out(path, std::ios::trunc);
  out << ::getpid() << '\n';
  out.close();
  if (!out) {
    *error = "cannot write --pidfile " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  return std::unique_ptr<PidFile>(new PidFile(path));
}

PidFile::~PidFile() {
  if (readPid(path_) == ::getpid()) {
    (void)::unlink(path_.c_str());
  }
}

}  // namespace iperf3proxy::app
