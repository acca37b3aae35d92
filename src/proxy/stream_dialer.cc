#include "proxy/stream_dialer.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

#include "net/socket_ops.h"

namespace iperf3proxy::proxy {
namespace {

// How often to look at the unacknowledged byte count while waiting: the wait is about one
// round trip, so a millisecond keeps the added delay negligible on any network.
constexpr long kAckPollMs = 1;

// Test data the proxy may hold unsent toward the server on a data connection
// (TCP_NOTSENT_LOWAT; bytes in flight are not limited, so throughput is not). Beyond it the relay
// stops reading from the client, which then feels the server's pace as on a direct path instead
// of running megabytes ahead into the proxy's buffers: a short --bidir client that ran ahead
// would end its test before the server's first bytes reached it.
constexpr int kUnsentLimit = 128 * 1024;

}  // namespace

StreamDialer::StreamDialer(ev::EventLoop& loop,
                           net::Address backend,
                           const proto::Cookie& cookie,
                           long deadline_ms,
                           net::StreamSocketOptions options,
                           Callbacks callbacks)
    : loop_(loop),
      backend_(backend),
      cookie_(cookie),
      deadline_ms_(deadline_ms),
      options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      ack_poll_(loop, [this] { pollAcknowledged(); }),
      deadline_(loop, [this] { failCurrent(ETIMEDOUT); }) {}

void StreamDialer::dialOne() {
  ++queued_;
  if (!current_ && !failed_) {
    startNext();
  }
}

void StreamDialer::stop() {
  failed_ = true;
  deadline_.disarm();
  ack_poll_.disarm();
  retireConnectEvent();
  current_.reset();
}

void StreamDialer::retireConnectEvent() {
  // Called from the event's own callback too (onConnected -> pollAcknowledged, or a callback that
  // stops the dialer): stop it now, free it once the callback has returned.
  if (connect_event_) {
    connect_event_->disable();
    loop_.deferredDestroy(std::move(connect_event_));
  }
}

void StreamDialer::startNext() {
  if (queued_ == 0 || failed_) {
    return;
  }
  --queued_;
  current_ = net::startConnect(backend_, &options_);
  if (!current_) {
    failCurrent(errno);
    return;
  }
  connect_event_ = std::make_unique<ev::IoEvent>(loop_, current_.get(), ev::IoEvent::Kind::Write,
                                                 [this] { onConnected(); });
  connect_event_->enable();
  deadline_.armMs(deadline_ms_);
}

void StreamDialer::onConnected() {
  connect_event_->disable();
  if (const int error = net::socketError(current_.get()); error != 0) {
    failCurrent(error);
    return;
  }
  net::setNoDelay(current_.get());
  // Best effort: without it the proxy only buffers more.
  (void)::setsockopt(current_.get(), IPPROTO_TCP, TCP_NOTSENT_LOWAT, &kUnsentLimit,
                     sizeof(kUnsentLimit));
  const auto& bytes = cookie_.bytes();
  const ssize_t n = ::send(current_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n != static_cast<ssize_t>(bytes.size())) {
    // A fresh socket's send buffer always takes 37 bytes; anything else is a broken connection.
    failCurrent(n == -1 ? errno : EPIPE);
    return;
  }
  polls_ = 0;
  pollAcknowledged();
}

void StreamDialer::pollAcknowledged() {
  const auto unacked = net::unacknowledgedBytes(current_.get());
  if (!unacked) {
    failCurrent(errno);
    return;
  }
  if (*unacked > 0) {
    ++polls_;
    ack_poll_.armMs(kAckPollMs);
    return;
  }
  deadline_.disarm();
  retireConnectEvent();
  ++dialed_;
  // The callback may queue more dials or stop the dialer; take the fd out first.
  net::UniqueFd ready = std::move(current_);
  current_.reset();
  callbacks_.on_ready(std::move(ready));
  startNext();
}

void StreamDialer::failCurrent(int error) {
  stop();
  callbacks_.on_failed(error);
}

}  // namespace iperf3proxy::proxy
