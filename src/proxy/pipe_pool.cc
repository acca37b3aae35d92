#include "proxy/pipe_pool.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <utility>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"

namespace iperf3proxy::proxy {

std::optional<PipePool::Pipe> makePipe(int pipe_size) {
  int fds[2] = {-1, -1};
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1) {
    return std::nullopt;
  }
  PipePool::Pipe pipe{net::UniqueFd(fds[0]), net::UniqueFd(fds[1])};
  // Best effort: a smaller pipe still works, only with more system calls per byte.
  const int got = ::fcntl(fds[1], F_SETPIPE_SZ, pipe_size);
  if (got < pipe_size) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) {
      const int error = got == -1 ? errno : 0;
      spdlog::warn(
          "pipes get {} bytes instead of the {} asked for ({}); the data path runs, with more "
          "system calls per byte. Raise fs.pipe-max-size, run as root, or lower --pipe-size",
          got == -1 ? ::fcntl(fds[1], F_GETPIPE_SZ) : got, pipe_size,
          error == 0 ? std::string("capped by the kernel") : net::errnoText(error));
    }
  }
  return pipe;
}

PipePool::PipePool(int pipe_size, std::size_t max_idle)
    : pipe_size_(pipe_size), max_idle_(max_idle) {}

std::optional<PipePool::Pipe> PipePool::acquire() {
  if (!idle_.empty()) {
    Pipe pipe = std::move(idle_.back());
    idle_.pop_back();
    return pipe;
  }
  return makePipe(pipe_size_);
}

void PipePool::release(Pipe pipe, bool empty) {
  if (empty && pipe.read && pipe.write && idle_.size() < max_idle_) {
    idle_.push_back(std::move(pipe));
  }
  // Else the pipe closes here, with whatever it held.
}

}  // namespace iperf3proxy::proxy
