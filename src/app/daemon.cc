#include "app/daemon.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

namespace iperf3proxy::app {
namespace {

// Written by the child when it is ready; startup errors are text lines, and never contain it.
constexpr char kReadyByte = '\x06';

std::string errnoText() {
  return std::strerror(errno);
}

// The original process: collect what the child reports until it closes the pipe.
int waitForChild(pid_t child, int report) {
  std::string received;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(report, buffer, sizeof(buffer));
    if (n > 0) {
      received.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  (void)::close(report);
  const auto ready = received.find(kReadyByte);
  std::cerr << received.substr(0, ready);
  if (ready != std::string::npos) {
    return 0;
  }
  // The child closed the pipe without being ready: it is exiting (or was killed).
  int status = 0;
  while (::waitpid(child, &status, 0) == -1 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    return WEXITSTATUS(status);
  }
  if (WIFSIGNALED(status)) {
    std::cerr << "iperf3-proxy: the daemon was killed by signal " << WTERMSIG(status)
              << " while starting\n";
  } else {
    std::cerr << "iperf3-proxy: the daemon exited while starting\n";
  }
  return 1;
}

bool detachFromTerminal(std::string* error) {
  if (::setsid() == -1) {
    *error = "setsid: " + errnoText();
    return false;
  }
  // Paths given relative to the start directory were made absolute before (main.cc).
  if (::chdir("/") == -1) {
    *error = "chdir /: " + errnoText();
    return false;
  }
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null == -1) {
    *error = "/dev/null: " + errnoText();
    return false;
  }
  for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) {
    if (::dup2(null, fd) == -1) {
      *error = "dup2: " + errnoText();
      return false;
    }
  }
  (void)::close(null);
  return true;
}

}  // namespace

Daemon::~Daemon() {
  if (report_fd_ != -1) {
    (void)::close(report_fd_);
  }
}

std::optional<int> Daemon::detach(std::string* error) {
  int fds[2] = {-1, -1};
  // Close-on-exec: the embedded iperf3 servers must not hold the pipe open.
  if (::pipe2(fds, O_CLOEXEC) == -1) {
    *error = "pipe: " + errnoText();
    return 1;
  }
  std::cout.flush();
  std::cerr.flush();
  const pid_t child = ::fork();
  if (child == -1) {
    *error = "fork: " + errnoText();
    (void)::close(fds[0]);
    (void)::close(fds[1]);
    return 1;
  }
  if (child > 0) {
    (void)::close(fds[1]);
    return waitForChild(child, fds[0]);
  }
  (void)::close(fds[0]);
  report_fd_ = fds[1];
  std::string why;
  if (!detachFromTerminal(&why)) {
    const std::string line = "iperf3-proxy: cannot detach: " + why + "\n";
    (void)!::write(report_fd_, line.data(), line.size());
    ::_exit(1);
  }
  return std::nullopt;
}

void Daemon::ready() {
  if (report_fd_ == -1) {
    return;
  }
  (void)!::write(report_fd_, &kReadyByte, 1);
  (void)::close(report_fd_);
  report_fd_ = -1;
}

}  // namespace iperf3proxy::app
