#pragma once

// What the component tests of a test's parts share: a loop driven until a condition holds, a
// loopback listener in the role of `iperf3 -s`, and small socket helpers for scripted peers
// that run on the test's own thread between turns of the loop.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string_view>
#include <vector>

#include "ev/event_loop.h"
#include "net/address.h"
#include "net/unique_fd.h"
#include "proto/cookie.h"
#include "proto/wire.h"

namespace iperf3proxy::proxy::testing {

using Bytes = std::vector<std::uint8_t>;

// Every wait is bounded by this unless a test says otherwise.
inline constexpr long kWaitMs = 5000;

// The cookie of the test under test, and its 37 bytes on the wire.
inline constexpr std::string_view kCookieText = "abcdefghijklmnopqrstuvwxyz234567abcd";
proto::Cookie testCookie();
Bytes cookieBytes();

// One control state byte, and byte strings joined: for scripting control transcripts.
Bytes state(proto::State s);
Bytes concat(std::initializer_list<Bytes> parts);

// Runs the loop until `done` holds (checked every millisecond) or `deadline_ms` passes;
// returns whether it holds.
bool runUntil(ev::EventLoop& loop, const std::function<bool()>& done, long deadline_ms = kWaitMs);

// Lets the loop run for a while (for things that must *not* happen).
void runFor(ev::EventLoop& loop, long ms);

// Bytes waiting to be read on a socket.
int bytesWaiting(int fd);

// Whether the peer has closed the connection (EOF or reset), with nothing left to read first.
bool closedByPeer(int fd);

// Reads exactly `size` bytes, running the loop until they have arrived (a failure otherwise).
Bytes receive(ev::EventLoop& loop, int fd, std::size_t size);

void sendAll(int fd, const Bytes& bytes);
void sendText(int fd, std::string_view text);

Bytes bytesOf(std::string_view text);

std::uint16_t localPort(int fd);
std::uint16_t peerPort(int fd);

// 127.0.0.1:port
net::Address loopbackAddress(std::uint16_t port);

// A blocking TCP connection from the test to `to` (connected when this returns).
net::UniqueFd tcpClientTo(const net::Address& to);

// A loopback port nothing listens on (it was free a moment ago).
net::Address closedLoopbackPort();

// TCP sockets of this network namespace in `state` (include/net/tcp_states.h, e.g. 2 =
// SYN_SENT) whose remote port is `remote_port`, from /proc/self/net/tcp.
int tcpSocketsInState(std::uint16_t remote_port, int state);
inline constexpr int kTcpSynSent = 2;

// A loopback listener in the role of `iperf3 -s`: it accepts in FIFO order, as the server does.
class TestListener {
 public:
  // `backlog` 0 leaves room for one connection in the accept queue.
  explicit TestListener(int backlog = 16);

  const net::Address& address() const { return address_; }

  std::uint16_t port() const { return address_.port(); }

  // The next connection in the accept queue, at once (invalid if there is none).
  net::UniqueFd acceptNow();

  // Runs the loop until a connection is in the accept queue, then accepts it (blocking fd).
  net::UniqueFd accept(ev::EventLoop& loop, long deadline_ms = kWaitMs);

 private:
  net::UniqueFd fd_;
  net::Address address_;
};

}  // namespace iperf3proxy::proxy::testing
