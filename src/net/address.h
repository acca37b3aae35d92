#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iperf3proxy::net {

// A numeric socket address (IPv4 or IPv6). Name resolution happens once, at startup, never on
// the event loop.
struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;

  int family() const { return storage.ss_family; }

  std::uint16_t port() const;
  void setPort(std::uint16_t port);

  const sockaddr* sockaddrPtr() const { return reinterpret_cast<const sockaddr*>(&storage); }

  sockaddr* sockaddrPtr() { return reinterpret_cast<sockaddr*>(&storage); }

  // "1.2.3.4:5201" or "[::1]:5201"; IPv4-mapped IPv6 addresses are shown as IPv4.
  std::string toString() const;

  // The IP without the port (same normalisation), for matching a client across connections.
  std::string hostString() const;

  static Address fromSockaddr(const sockaddr* addr, socklen_t length);
};

// Parses "HOST:PORT", "[V6]:PORT"; HOST may be a name, resolved with getaddrinfo (startup only).
std::optional<Address> resolveHostPort(std::string_view text, std::string* error);

// Parses a bind address (numeric or name) with the given port.
std::optional<Address> resolveHost(std::string_view host, std::uint16_t port, std::string* error);

std::optional<Address> peerAddress(int fd);
std::optional<Address> localAddress(int fd);

}  // namespace iperf3proxy::net
