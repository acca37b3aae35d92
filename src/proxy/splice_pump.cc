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
// While draining: how often to look, and how long it must stay quiet to count as drained.
// Quiet means nothing readable from the client, nothing in the pipe, nothing unacknowledged by
// the server, and the server's advertised window unchanged: it grows while the server is still
// reading what it was sent (iperf3 closes its data sockets at TEST_END, and what it has not read
// by then is not counted). Bytes still leaving the client's send buffer arrive within a
// millisecond or two once the proxy has made room for them; the quiet time is measured on the
// clock (looks can come late on a loaded host) and covers a late softirq there.
// Not scaled by the connections' round-trip estimates: a handshake with a delayed ACK (what the
// race testbed does, and what the proxy exists for) inflates them to hundreds of milliseconds;
// with such drains (624 ms) a short --bidir test under the testbed counted 0 B on a download
// stream in three runs out of three in CI, where it had passed in every run with a fixed quiet.
constexpr long kDrainTickMs = 1;
constexpr std::chrono::milliseconds kQuietToDrain{10};

}  // namespace

SplicePump::SplicePump(ev::EventLoop& loop,
                       int first_fd,
                       int second_fd,
                       DoneCallback done,
                       std::shared_ptr<PipePool> pipes)
    : loop_(loop), done_(std::move(done)), pipes_(std::move(pipes)) {
  forward_.from = first_fd;
  forward_.to = second_fd;
  forward_.from_is_first = true;
  backward_.from = second_fd;
  backward_.to = first_fd;
  backward_.from_is_first = false;
}

SplicePump::~SplicePump() {
  // The events go first: nothing may fire on a pipe that is back in the pool.
  for (Direction* d : {&forward_, &backward_}) {
    d->readable.reset();
    d->writable.reset();
  }
  releasePipes();
}

bool SplicePump::start() {
  for (Direction* d : {&forward_, &backward_}) {
    auto pipe = pipes_ ? pipes_->acquire() : makePipe(kDefaultPipeSize);
    if (!pipe) {
      return false;
    }
    d->pipe_read = std::move(pipe->read);
    d->pipe_write = std::move(pipe->write);
    d->readable = std::make_unique<ev::IoEvent>(loop_, d->from, ev::IoEvent::Kind::Read,
                                                [this, d] { pump(*d); });
    d->writable = std::make_unique<ev::IoEvent>(loop_, d->to, ev::IoEvent::Kind::Write,
                                                [this, d] { pump(*d); });
  }
  forward_.readable->enable();
  backward_.readable->enable();
  return true;
}

void SplicePump::releasePipes() {
  for (Direction* d : {&forward_, &backward_}) {
    if (pipes_ && d->pipe_read) {
      // A pipe that still holds bytes (the test was stopped mid-flight) is closed, not reused.
      pipes_->release({std::move(d->pipe_read), std::move(d->pipe_write)}, d->in_pipe == 0);
    }
  }
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
      } else if (errno == EINTR) {
        continue;
      } else if (d.read_failed) {
        d.eof = true;  // a second error: the failed side has nothing more
      } else {
        // A socket reports a reset once, possibly before every byte that arrived ahead of it is
        // read (when the pipe had little room), and then hands out the rest and EOF: read on.
        d.read_failed = true;
        if (!failure_) {
          fail(d, errno, /*at_from=*/true);
          return;
        }
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
  // The first look may already count as quiet: the window it compares with is today's.
  last_peer_window_ = net::peerReceiveWindow(forward_.to);
  quiet_since_ = std::chrono::steady_clock::now();
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
  const auto now = std::chrono::steady_clock::now();
  if (!quiet) {
    quiet_since_ = now;
  }
  if (now - quiet_since_ >= kQuietToDrain) {
    finishDrain();
    return;
  }
  drain_tick_->armMs(kDrainTickMs);
}

void SplicePump::stop() {
  stopDrain();
  completed_ = true;
  if (flush_deadline_) {
    flush_deadline_->disarm();
  }
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
    complete(failure_ ? *failure_ : Completion{Outcome::Closed, 0, false});
  }
}

void SplicePump::fail(Direction& d, int error, bool at_from) {
  if (failure_) {
    complete(*failure_);  // the open side failed too: nothing more can be delivered
    return;
  }
  const bool at_first = at_from ? d.from_is_first : !d.from_is_first;
  failure_ = Completion{Outcome::Error, error, at_first};
  // Nothing reaches the failed side any more; what is in that direction's pipe is lost, as the
  // bytes in flight toward a reset socket are on a direct path.
  Direction& toward_failed = at_first ? backward_ : forward_;
  toward_failed.done = true;
  toward_failed.readable->disable();
  toward_failed.writable->disable();
  // What the failed side sent before the error goes on to the open side.
  Direction& from_failed = at_first ? forward_ : backward_;
  if (from_failed.done) {
    complete(*failure_);
    return;
  }
  flush_deadline_ = std::make_unique<ev::Timer>(loop_, [this] { complete(*failure_); });
  flush_deadline_->armMs(kFlushAfterErrorMs);
  pump(from_failed);
}

void SplicePump::complete(const Completion& completion) {
  if (completed_) {
    return;
  }
  completed_ = true;
  if (drain_tick_) {
    drain_tick_->disarm();
  }
  if (flush_deadline_) {
    flush_deadline_->disarm();
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
