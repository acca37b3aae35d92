#include "proxy/backend_link.h"

#include <sys/socket.h>

#include <array>
#include <cerrno>

#include <spdlog/fmt/fmt.h>

#include "net/socket_ops.h"
#include "proto/wire.h"
#include "proxy/settings.h"

namespace iperf3proxy::proxy {
namespace {

using fixed::kRelistenRetryMs;
// Read at most this much of the first answer: one state byte, or a SERVER_ERROR (9 bytes).
constexpr std::size_t kAnswerChunk = 64;

}  // namespace

BackendLink::BackendLink(ev::EventLoop& loop,
                         pool::Lease lease,
                         const proto::Cookie& cookie,
                         long deadline_ms,
                         Callbacks callbacks)
    : loop_(loop),
      lease_(std::move(lease)),
      cookie_(cookie),
      deadline_ms_(deadline_ms),
      callbacks_(std::move(callbacks)),
      retry_(loop, [this] { connect(); }),
      deadline_(loop, [this] {
        if (answering_) {
          fault(pool::BackendFault::Silent,
                fmt::format("no answer within {} ms of the cookie", deadline_ms_));
        } else {
          fault(pool::BackendFault::Refused,
                fmt::format("no connection within {} ms ({})", deadline_ms_,
                            net::errnoText(last_error_ != 0 ? last_error_ : ETIMEDOUT)));
        }
      }) {}

void BackendLink::start() {
  deadline_.armMs(deadline_ms_);
  connect();
}

void BackendLink::stop() {
  stopped_ = true;
  retry_.disarm();
  deadline_.disarm();
  retireEvent();
}

void BackendLink::retireEvent() {
  // May be called from the event's own callback: stop it now, free it once that has returned.
  if (event_) {
    event_->disable();
    loop_.deferredDestroy(std::move(event_));
  }
}

bool BackendLink::retryWhileRelistening() {
  if (pool::Clock::now() >= lease_.refusals_expected_until) {
    return false;
  }
  retireEvent();
  fd_.reset();
  answering_ = false;
  retry_.armMs(kRelistenRetryMs);
  return true;
}

void BackendLink::connect() {
  if (stopped_) {
    return;
  }
  fd_ = net::startConnect(lease_.address);
  if (!fd_) {
    last_error_ = errno;
    if (last_error_ == ECONNREFUSED && retryWhileRelistening()) {
      return;
    }
    if (net::isLocalResourceError(last_error_)) {
      stop();
      callbacks_.on_local_failure(net::errnoText(last_error_));
      return;
    }
    fault(pool::BackendFault::Refused, net::errnoText(last_error_));
    return;
  }
  event_ = std::make_unique<ev::IoEvent>(loop_, fd_.get(), ev::IoEvent::Kind::Write,
                                         [this] { onConnectReady(); });
  event_->enable();
}

void BackendLink::onConnectReady() {
  if (stopped_) {
    return;
  }
  retireEvent();
  last_error_ = net::socketError(fd_.get());
  if (last_error_ != 0) {
    if (last_error_ == ECONNREFUSED && retryWhileRelistening()) {
      return;
    }
    fault(pool::BackendFault::Refused, net::errnoText(last_error_));
    return;
  }
  net::setNoDelay(fd_.get());
  const auto& bytes = cookie_.bytes();
  const ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n != static_cast<ssize_t>(bytes.size())) {
    // A fresh socket's send buffer always takes 37 bytes; anything else is a broken connection.
    const int error = n == -1 ? errno : EPIPE;
    if (retryWhileRelistening()) {
      return;
    }
    fault(pool::BackendFault::Closed, "sending the cookie: " + net::errnoText(error));
    return;
  }
  answering_ = true;
  event_ = std::make_unique<ev::IoEvent>(loop_, fd_.get(), ev::IoEvent::Kind::Read,
                                         [this] { onAnswerReadable(); });
  event_->enable();
}

void BackendLink::onAnswerReadable() {
  if (stopped_) {
    return;
  }
  std::array<std::uint8_t, kAnswerChunk> buffer{};
  const ssize_t n = ::recv(fd_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
  if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
    return;
  }
  if (n <= 0) {
    // Closed or reset before a word: typically the connection landed in the backlog of the
    // listener the server was just closing after its previous test.
    const std::string why = n == 0 ? "closed" : net::errnoText(errno);
    if (retryWhileRelistening()) {
      return;
    }
    fault(pool::BackendFault::Closed, why);
    return;
  }
  if (proto::stateFromWire(buffer[0]) == proto::State::AccessDenied) {
    fault(pool::BackendFault::Busy, "ACCESS_DENIED");
    return;
  }
  stop();
  callbacks_.on_answered(std::move(fd_),
                         std::vector<std::uint8_t>(buffer.begin(), buffer.begin() + n));
}

void BackendLink::fault(pool::BackendFault fault, std::string detail) {
  if (stopped_) {
    return;
  }
  stop();
  fd_.reset();
  callbacks_.on_fault(fault, std::move(detail));
}

}  // namespace iperf3proxy::proxy
