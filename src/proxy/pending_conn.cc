#include "proxy/pending_conn.h"

#include <sys/socket.h>

#include <cerrno>

#include <spdlog/fmt/fmt.h>

#include "net/socket_ops.h"

namespace iperf3proxy::proxy {

PendingConn::PendingConn(
    ev::EventLoop& loop, net::UniqueFd fd, net::Address peer, long deadline_ms, Callbacks callbacks)
    : callbacks_(std::move(callbacks)),
      fd_(std::move(fd)),
      peer_(peer),
      readable_(loop, fd_.get(), ev::IoEvent::Kind::Read, [this] { onReadable(); }),
      deadline_(loop, [this] {
        finish();
        callbacks_.on_rejected(*this, Rejection::Timeout,
                               fmt::format("no complete cookie within the deadline "
                                           "({} of {} bytes)",
                                           have_, proto::kCookieSize));
      }) {
  readable_.enable();
  deadline_.armMs(deadline_ms);
}

void PendingConn::finish() {
  finished_ = true;
  readable_.disable();
  deadline_.disarm();
}

void PendingConn::onReadable() {
  if (finished_) {
    return;
  }
  const ssize_t n = ::recv(fd_.get(), buffer_.data() + have_, buffer_.size() - have_, MSG_DONTWAIT);
  if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
    return;
  }
  if (n <= 0) {
    finish();
    callbacks_.on_rejected(*this, n == 0 ? Rejection::Closed : Rejection::ReadError,
                           n == 0 ? fmt::format("closed after {} bytes, before a complete "
                                                "cookie",
                                                have_)
                                  : "read error: " + net::errnoText(errno));
    return;
  }
  have_ += static_cast<std::size_t>(n);
  // Refuse garbage at once rather than waiting for the rest of it.
  if (const auto bad = proto::firstInvalidCookieByte(std::span(buffer_.data(), have_))) {
    finish();
    callbacks_.on_rejected(
        *this, Rejection::Garbage,
        fmt::format("not an iperf3 cookie (byte {} is 0x{:02x})", *bad, buffer_[*bad]));
    return;
  }
  if (have_ < proto::kCookieSize) {
    return;
  }
  finish();
  auto cookie = proto::Cookie::parse(buffer_);
  callbacks_.on_cookie(*this, *cookie, std::move(fd_));
}

}  // namespace iperf3proxy::proxy
