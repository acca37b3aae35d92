#include "net/address.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>

namespace iperf3proxy::net {

std::uint16_t Address::port() const {
  if (family() == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  }
  if (family() == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  }
  return 0;
}

void Address::setPort(std::uint16_t port) {
  if (family() == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&storage)->sin_port = htons(port);
  } else if (family() == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port = htons(port);
  }
}

std::string Address::hostString() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr, text,
              sizeof(text));
    return text;
  }
  if (family() == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], text, sizeof(text));
      return text;
    }
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    return text;
  }
  return "?";
}

std::string Address::toString() const {
  const std::string host = hostString();
  const bool bracket = host.find(':') != std::string::npos;
  return (bracket ? "[" + host + "]" : host) + ":" + std::to_string(port());
}

Address Address::fromSockaddr(const sockaddr* addr, socklen_t length) {
  Address result;
  std::memcpy(&result.storage, addr, std::min<std::size_t>(length, sizeof(result.storage)));
  result.length = length;
  return result;
}

std::optional<Address> resolveHost(std::string_view host, std::uint16_t port, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const std::string host_string(host);
  const std::string port_string = std::to_string(port);
  const int rc = getaddrinfo(host_string.c_str(), port_string.c_str(), &hints, &list);
  if (rc != 0 || list == nullptr) {
    if (error != nullptr) {
      *error = "cannot resolve '" + host_string + "': " + gai_strerror(rc);
    }
    return std::nullopt;
  }
  Address result = Address::fromSockaddr(list->ai_addr, list->ai_addrlen);
  freeaddrinfo(list);
  return result;
}

std::optional<Address> resolveHostPort(std::string_view text, std::string* error) {
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      if (error != nullptr) {
        *error = "expected [IPv6]:PORT, got '" + std::string(text) + "'";
      }
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      if (error != nullptr) {
        *error = "expected HOST:PORT, got '" + std::string(text) + "'";
      }
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535 || host.empty()) {
    if (error != nullptr) {
      *error = "invalid HOST:PORT '" + std::string(text) + "'";
    }
    return std::nullopt;
  }
  return resolveHost(host, static_cast<std::uint16_t>(port), error);
}

std::optional<Address> peerAddress(int fd) {
  Address result;
  result.length = sizeof(result.storage);
  if (getpeername(fd, result.sockaddrPtr(), &result.length) == -1) {
    return std::nullopt;
  }
  return result;
}

std::optional<Address> localAddress(int fd) {
  Address result;
  result.length = sizeof(result.storage);
  if (getsockname(fd, result.sockaddrPtr(), &result.length) == -1) {
    return std::nullopt;
  }
  return result;
}

}  // namespace iperf3proxy::net
