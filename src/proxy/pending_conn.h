#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/unique_fd.h"
#include "proto/cookie.h"

namespace iperf3proxy::proxy {

// A freshly accepted TCP connection that has not yet shown its cookie. Reads exactly 37 bytes,
// never more, so whatever follows (test data, a role byte) stays in the kernel for the relay.
class PendingConn : public ev::DeferredDeletable {
 public:
  // Why a connection never became part of a test (counted in the proxy's stats).
  enum class Rejection { Garbage, Timeout, Closed, ReadError };

  // Exactly one of the two is called, once.
  struct Callbacks {
    std::function<void(PendingConn&, proto::Cookie, net::UniqueFd)> on_cookie;
    std::function<void(PendingConn&, Rejection, const std::string& why)> on_rejected;
  };

  PendingConn(ev::EventLoop& loop,
              net::UniqueFd fd,
              net::Address peer,
              long deadline_ms,
              Callbacks callbacks);

  const net::Address& peer() const { return peer_; }

  // When the connection was accepted: a test's set-up time is counted from there.
  std::chrono::steady_clock::time_point accepted() const { return accepted_; }

  // No callback after this (the connection was evicted or the proxy is stopping).
  void stop() { finish(); }

 private:
  void onReadable();
  void finish();

  Callbacks callbacks_;
  net::UniqueFd fd_;
  net::Address peer_;
  std::chrono::steady_clock::time_point accepted_ = std::chrono::steady_clock::now();
  std::array<std::uint8_t, proto::kCookieSize> buffer_{};
  std::size_t have_ = 0;
  bool finished_ = false;
  ev::IoEvent readable_;
  ev::Timer deadline_;
};

}  // namespace iperf3proxy::proxy
