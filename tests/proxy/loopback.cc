#include "loopback.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

namespace iperf3proxy::proxy::testing {

std::pair<net::UniqueFd, net::UniqueFd> tcpPair() {
  net::UniqueFd listener(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  EXPECT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), length), 0);
  EXPECT_EQ(::listen(listener.get(), 1), 0);
  EXPECT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  net::UniqueFd outer(::socket(AF_INET, SOCK_STREAM, 0));
  EXPECT_EQ(::connect(outer.get(), reinterpret_cast<sockaddr*>(&address), length), 0);
  net::UniqueFd inner(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK));
  EXPECT_TRUE(inner.valid());
  return {std::move(outer), std::move(inner)};
}

}  // namespace iperf3proxy::proxy::testing
