#include "scripted_peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "ev/io_event.h"

namespace iperf3proxy::proxy::testing {

proto::Cookie testCookie() {
  return *proto::Cookie::parse(cookieBytes());
}

Bytes cookieBytes() {
  Bytes bytes(kCookieText.begin(), kCookieText.end());
  bytes.push_back(0);
  return bytes;
}

Bytes state(proto::State s) {
  return {proto::stateToWire(s)};
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes all;
  for (const Bytes& part : parts) {
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

bool runUntil(ev::EventLoop& loop, const std::function<bool()>& done, long deadline_ms) {
  bool met = done();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
  ev::Timer tick(loop, [&] {
    met = done();
    if (met || std::chrono::steady_clock::now() >= deadline) {
      loop.stop();
    } else {
      tick.armMs(1);
    }
  });
  if (!met) {
    tick.armMs(1);
    loop.run();
  }
  return met;
}

void runFor(ev::EventLoop& loop, long ms) {
  runUntil(
      loop, [] { return false; }, ms);
}

int bytesWaiting(int fd) {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

bool closedByPeer(int fd) {
  std::uint8_t byte = 0;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR);
}

Bytes receive(ev::EventLoop& loop, int fd, std::size_t size) {
  const bool arrived = runUntil(
      loop, [&] { return bytesWaiting(fd) >= static_cast<int>(size) || closedByPeer(fd); });
  Bytes bytes(size);
  const ssize_t n = ::recv(fd, bytes.data(), size, MSG_DONTWAIT);
  if (!arrived || n != static_cast<ssize_t>(size)) {
    ADD_FAILURE() << "wanted " << size << " bytes, got " << n << (arrived ? "" : " in time");
    bytes.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  }
  return bytes;
}

void sendAll(int fd, const Bytes& bytes) {
  ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

void sendText(int fd, std::string_view text) {
  sendAll(fd, bytesOf(text));
}

Bytes bytesOf(std::string_view text) {
  return Bytes(text.begin(), text.end());
}

std::uint16_t localPort(int fd) {
  const auto address = net::localAddress(fd);
  return address ? address->port() : 0;
}

std::uint16_t peerPort(int fd) {
  const auto address = net::peerAddress(fd);
  return address ? address->port() : 0;
}

net::Address loopbackAddress(std::uint16_t port) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  in.sin_port = htons(port);
  return net::Address::fromSockaddr(reinterpret_cast<sockaddr*>(&in), sizeof(in));
}

net::UniqueFd tcpClientTo(const net::Address& to) {
  net::UniqueFd fd(::socket(to.family(), SOCK_STREAM, 0));
  EXPECT_EQ(::connect(fd.get(), to.sockaddrPtr(), to.length), 0) << std::strerror(errno);
  return fd;
}

net::Address closedLoopbackPort() {
  net::UniqueFd probe(::socket(AF_INET, SOCK_STREAM, 0));
  net::Address address = loopbackAddress(0);
  EXPECT_EQ(::bind(probe.get(), address.sockaddrPtr(), address.length), 0);
  return loopbackAddress(localPort(probe.get()));
}

int tcpSocketsInState(std::uint16_t remote_port, int state) {
  std::ifstream table("/proc/self/net/tcp");
  std::string line;
  std::getline(table, line);  // header
  int count = 0;
  while (std::getline(table, line)) {
    // sl local_address rem_address st ...   (addresses as HEXIP:HEXPORT, st in hex)
    std::istringstream fields(line);
    std::string slot, local, remote, st;
    fields >> slot >> local >> remote >> st;
    const auto colon = remote.rfind(':');
    if (colon == std::string::npos) {
      continue;
    }
    if (std::stoi(remote.substr(colon + 1), nullptr, 16) == remote_port &&
        std::stoi(st, nullptr, 16) == state) {
      ++count;
    }
  }
  return count;
}

TestListener::TestListener(int backlog) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
  address_ = loopbackAddress(0);
  EXPECT_EQ(::bind(fd_.get(), address_.sockaddrPtr(), address_.length), 0);
  EXPECT_EQ(::listen(fd_.get(), backlog), 0);
  address_ = loopbackAddress(localPort(fd_.get()));
}

net::UniqueFd TestListener::acceptNow() {
  pollfd p{fd_.get(), POLLIN, 0};
  if (::poll(&p, 1, 0) != 1) {
    return net::UniqueFd();
  }
  return net::UniqueFd(::accept(fd_.get(), nullptr, nullptr));
}

net::UniqueFd TestListener::accept(ev::EventLoop& loop, long deadline_ms) {
  net::UniqueFd accepted;
  runUntil(
      loop, [&] { return (accepted = acceptNow()).valid(); }, deadline_ms);
  EXPECT_TRUE(accepted.valid()) << "no connection reached the listener in time";
  return accepted;
}

}  // namespace iperf3proxy::proxy::testing
