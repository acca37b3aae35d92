#pragma once

#include <optional>
#include <string>

namespace iperf3proxy::app {

// -D/--daemon, as `iperf3 -s -D` has it, with the start reported honestly: the process forks and
// the child detaches (a session of its own, "/" as its directory, stdin, stdout and stderr on
// /dev/null) and starts the proxy, while the original process waits on a pipe until the child
// is ready, or has failed. Then it prints the child's startup errors (if any) on its own stderr
// and exits 0, or with the child's exit code: a start script or a systemd unit of Type=forking
// sees a failed start as if there had been no fork, and is told "started" only once the proxy
// listens.
//
// Call before any thread or event loop exists: only the calling thread survives a fork.
class Daemon {
 public:
  Daemon() = default;
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // In the original process: the code to exit with, once the child is ready or failed. In the
  // child: nullopt, and reportFd() is where startup errors go until ready(). A failure before
  // the fork (no pipe, no fork): 1, with `error` set.
  std::optional<int> detach(std::string* error);

  // The pipe to the waiting original process (in the child, until ready()); else -1.
  int reportFd() const { return report_fd_; }

  // The proxy is ready: the original process exits 0.
  void ready();

 private:
  int report_fd_ = -1;
};

}  // namespace iperf3proxy::app
