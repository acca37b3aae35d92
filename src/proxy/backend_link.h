#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ev/io_event.h"
#include "net/unique_fd.h"
#include "pool/backend_pool.h"
#include "proto/cookie.h"

namespace iperf3proxy::proxy {

// Opens a test's control connection to the backend it was leased and waits for the server's
// first answer, so that a backend that cannot take the test is found out before the client has
// seen a single byte from it: the session can then ask for another backend, invisibly.
//
//   connect  -- refused while the server is expected to be re-listening: retried
//   cookie   -- the client's 37 bytes, as the client sent them
//   answer   -- PARAM_EXCHANGE (or anything else but "busy"): the link is up
//
// Every step is bounded by one deadline (--backend-timeout).
class BackendLink {
 public:
  struct Callbacks {
    // The server answered; `answer` holds the bytes read so far (at least one), which the
    // control relay forwards as the server's first.
    std::function<void(net::UniqueFd fd, std::vector<std::uint8_t> answer)> on_answered;
    // This backend cannot take the test.
    std::function<void(pool::BackendFault fault, std::string detail)> on_fault;
    // The proxy could not even try (no descriptor, memory or local port left): not the
    // backend's fault, and another backend would fare no better.
    std::function<void(std::string detail)> on_local_failure;
  };

  BackendLink(ev::EventLoop& loop,
              pool::Lease lease,
              const proto::Cookie& cookie,
              long deadline_ms,
              Callbacks callbacks);
  BackendLink(const BackendLink&) = delete;
  BackendLink& operator=(const BackendLink&) = delete;

  void start();

  // No callback after this; the socket (if any) closes with the link.
  void stop();

  const pool::Lease& lease() const { return lease_; }

 private:
  void connect();
  void onConnectReady();
  void onAnswerReadable();
  // A refused connect (or a close before the answer) right after the server's previous test is
  // the server re-listening: try again shortly, within the deadline.
  bool retryWhileRelistening();
  void fault(pool::BackendFault fault, std::string detail);
  void retireEvent();

  ev::EventLoop& loop_;
  pool::Lease lease_;
  proto::Cookie cookie_;
  long deadline_ms_;
  Callbacks callbacks_;
  bool stopped_ = false;
  bool answering_ = false;  // the cookie went out; waiting for the server's first byte
  int last_error_ = 0;
  net::UniqueFd fd_;
  std::unique_ptr<ev::IoEvent> event_;
  ev::Timer retry_;
  ev::Timer deadline_;
};

}  // namespace iperf3proxy::proxy
