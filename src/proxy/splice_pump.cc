#include "proxy/splice_pump.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>
#include <utility>

#include "net/socket_ops.h"

namespace iperf3proxy::proxy {
namespace {

constexpr std::size_t kSpliceChunk = 1 << 20;
// Rounds per wake-up before yielding to other connections (events are level-triggered, so
// whatever is left fires again at once). One round, at most a pipe's worth: a connection that
// just became ready (a new pairing's first bytes, a role's evidence) then waits behind at most
// that much per busy relay. In a --bidir -P 4 test the server's first bytes waited in the proxy
// 0.8 ms (p50) after their role was certain with one round, 2.7 ms with eight, at the same
// throughput (bench/README.md, "First bytes of a --bidir test").
constexpr int kRoundsPerWakeup = 1;
// While draining: how often to look, and how many consecutive quiet looks count as drained.
// Quiet means nothing readable from the client, nothing in the pipe, nothing unacknowledged by
// the server, and the server's advertised window unchanged: it grows while the server is still
// reading what it was sent (iperf3 closes its data sockets at TEST_END, and what it has not read
// by then is not counted). Bytes still leaving the client's send buffer arrive within a tick or
// two once the proxy has made room for them.
constexpr long kDrainTickMs = 2;
constexpr int kQuietTicksToDrain = 5;

}  // namespace

SplicePump::SplicePump(ev::EventLoop& loop, int first_fd, int second_fd, DoneCallback done)
    : loop_(loop), done_(std::move(done)) {
  forward_.from = first_fd;
  forward_.to = second_fd;
  forward_.from_is_first = true;
  backward_.from = second_fd;
  backward_.to = first_fd;
  backward_.from_is_first = false;
}

bool SplicePump::start(int pipe_size) {
  for (Direction* d : {&forward_, &backward_}) {
    int fds[2] = {-1, -1};
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1) {
      return false;
    }
    d->pipe_read.reset(fds[0]);
    d->pipe_write.reset(fds[1]);
    // Best effort: the kernel caps the size at fs.pipe-max-size.
    (void)::fcntl(fds[1], F_SETPIPE_SZ, pipe_size);
    d->readable = std::make_unique<ev::IoEvent>(loop_, d->from, ev::IoEvent::Kind::Read,
                                                [this, d] { pump(*d); });
    d->writable = std::make_unique<ev::IoEvent>(loop_, d->to, ev::IoEvent::Kind::Write,
                                                [this, d] { pump(*d); });
  }
  forward_.readable->enable();
  backward_.readable->enable();
  return true;
}

void SplicePump::pump(Direction& d) {
  for (int round = 0; round < kRoundsPerWakeup && !d.done && !completed_; ++round) {
    bool read_blocked = false;
    if (!d.eof) {
      const ssize_t n = ::splice(d.from, nullptr, d.pipe_write.get(), nullptr, kSpliceChunk,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d.in_pipe += static_cast<std::size_t>(n);
      } else if (n == 0) {
        d.eof = true;
      } else if (errno == EAGAIN) {
        read_blocked = true;
      } else if (errno != EINTR) {
        fail(d, errno, /*at_from=*/true);
        return;
      }
    }
    while (d.in_pipe > 0) {
      const ssize_t m = ::splice(d.pipe_read.get(), nullptr, d.to, nullptr, d.in_pipe,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (m > 0) {
        d.in_pipe -= static_cast<std::size_t>(m);
        d.bytes += static_cast<std::uint64_t>(m);
      } else if (m == -1 && errno == EAGAIN) {
        // Backpressure: stop reading until the destination drains.
        d.readable->disable();
        d.writable->enable();
        return;
      } else if (m == -1 && errno == EINTR) {
        continue;
      } else {
        fail(d, m == 0 ? EPIPE : errno, /*at_from=*/false);
        return;
      }
    }
    d.writable->disable();
    if (d.eof) {
      finishDirection(d);
      return;
    }
    d.readable->enable();
    if (read_blocked) {
      return;
    }
  }
}

void SplicePump::drainFirstToSecond(std::function<void()> done) {
  if (drain_started_) {
    return;
  }
  drain_started_ = true;
  drained_ = std::move(done);
  quiet_ticks_ = 0;
  drain_tick_ = std::make_unique<ev::Timer>(loop_, [this] { onDrainTick(); });
  onDrainTick();
}

void SplicePump::stopDrain() {
  if (drain_tick_) {
    drain_tick_->disarm();
  }
  drained_ = nullptr;
}

void SplicePump::onDrainTick() {
  if (completed_ || forward_.done) {
    finishDrain();
    return;
  }
  pump(forward_);
  if (completed_ || forward_.done) {
    finishDrain();
    return;
  }
  std::uint8_t byte = 0;
  const bool readable = ::recv(forward_.from, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
  const auto unacknowledged = net::unacknowledgedBytes(forward_.to);
  const auto window = net::peerReceiveWindow(forward_.to);
  const bool quiet = !readable && forward_.in_pipe == 0 && unacknowledged.value_or(0) == 0 &&
                     window == last_peer_window_;
  last_peer_window_ = window;
  quiet_ticks_ = quiet ? quiet_ticks_ + 1 : 0;
  if (quiet_ticks_ >= kQuietTicksToDrain) {
    finishDrain();
    return;
  }
  drain_tick_->armMs(kDrainTickMs);
}

void SplicePump::stop() {
  stopDrain();
  completed_ = true;
  for (Direction* d : {&forward_, &backward_}) {
    if (d->readable) {
      d->readable->disable();
      d->writable->disable();
    }
  }
}

void SplicePump::finishDrain() {
  if (drain_tick_) {
    drain_tick_->disarm();
  }
  if (auto done = std::exchange(drained_, nullptr)) {
    done();
  }
}

void SplicePump::finishDirection(Direction& d) {
  d.done = true;
  d.readable->disable();
  d.writable->disable();
  // Pass the half-close on. ENOTCONN only means the peer is already gone; the other direction
  // reports that.
  (void)::shutdown(d.to, SHUT_WR);
  if (forward_.done && backward_.done) {
    complete({Outcome::Closed, 0, false});
  }
}

void SplicePump::fail(Direction& d, int error, bool at_from) {
  const bool at_first = at_from ? d.from_is_first : !d.from_is_first;
  complete({Outcome::Error, error, at_first});
}

void SplicePump::complete(const Completion& completion) {
  if (completed_) {
    return;
  }
  completed_ = true;
  if (drain_tick_) {
    drain_tick_->disarm();
  }
  for (Direction* d : {&forward_, &backward_}) {
    if (d->readable) {
      d->readable->disable();
      d->writable->disable();
    }
  }
  // A drain in progress is over too. The callbacks may destroy this pump (through a deferred
  // delete only), so they are the last statements that touch it.
  if (auto drained = std::exchange(drained_, nullptr)) {
    drained();
  }
  done_(completion);
}

}  // namespace iperf3proxy::proxy
