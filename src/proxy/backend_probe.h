#pragma once

#include <functional>
#include <memory>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/unique_fd.h"

namespace iperf3proxy::proxy {

// Whether anything listens at a backend's address: one TCP connect, closed as soon as it is
// established, with a deadline. Used only on backends known to refuse connections (see
// Backends): a connection to a live iperf3 server is a test attempt to it (it reads a cookie,
// fails, and re-listens), so live servers are never probed.
class BackendProbe {
 public:
  // `done(listening)` is called once, on the loop, never from inside start().
  BackendProbe(ev::EventLoop& loop,
               const net::Address& address,
               long deadline_ms,
               std::function<void(bool listening)> done);
  ~BackendProbe();
  BackendProbe(const BackendProbe&) = delete;
  BackendProbe& operator=(const BackendProbe&) = delete;

  void start();

 private:
  void finish(bool listening);

  ev::EventLoop& loop_;
  net::Address address_;
  long deadline_ms_;
  std::function<void(bool)> done_;
  net::UniqueFd fd_;
  bool finished_ = false;
  std::unique_ptr<ev::IoEvent> writable_;
  ev::Timer deadline_;
  ev::Timer refused_now_;  // a connect that failed at once still reports from the loop
};

}  // namespace iperf3proxy::proxy
