#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/socket_ops.h"
#include "net/unique_fd.h"
#include "proto/cookie.h"

namespace iperf3proxy::proxy {

// Opens a test's data connections to the backend strictly one after another, and reports each
// one only once the server's TCP has acknowledged its cookie.
//
// Why: the iperf3 server gives roles in accept order. Acknowledged data implies an established
// connection, which is already in the server's FIFO accept queue (iperf3 uses neither
// SO_REUSEPORT nor TCP_DEFER_ACCEPT). Opening connection k+1 only after that makes the server's
// accept order exactly the order of the reports, even across a real network (docs/PROTOCOL.md
// §7.6).
class StreamDialer {
 public:
  struct Callbacks {
    // In the server's accept order.
    std::function<void(net::UniqueFd)> on_ready;
    std::function<void(int error)> on_failed;
  };

  StreamDialer(ev::EventLoop& loop,
               net::Address backend,
               const proto::Cookie& cookie,
               long deadline_ms,
               net::StreamSocketOptions options,
               Callbacks callbacks);
  StreamDialer(const StreamDialer&) = delete;
  StreamDialer& operator=(const StreamDialer&) = delete;

  // Queues one more backend data connection.
  void dialOne();

  // Abandons the connection in progress and everything queued; no callback follows.
  void stop();

  int dialed() const { return dialed_; }

 private:
  void startNext();
  void onConnected();
  void pollAcknowledged();
  void failCurrent(int error);
  void retireConnectEvent();

  ev::EventLoop& loop_;
  net::Address backend_;
  proto::Cookie cookie_;
  long deadline_ms_;
  net::StreamSocketOptions options_;
  Callbacks callbacks_;
  int queued_ = 0;
  int dialed_ = 0;
  int polls_ = 0;
  bool failed_ = false;
  net::UniqueFd current_;
  std::unique_ptr<ev::IoEvent> connect_event_;
  ev::Timer ack_poll_;
  ev::Timer deadline_;
};

}  // namespace iperf3proxy::proxy
