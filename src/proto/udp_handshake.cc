#include "proto/udp_handshake.h"

#include <algorithm>
#include <array>

namespace iperf3proxy::proto {
namespace {

using Pattern = std::array<std::uint8_t, 4>;

constexpr Pattern kConnectCurrent = {'9', '8', '7', '6'};
constexpr Pattern kReplyCurrent = {'6', '7', '8', '9'};
// 123456789 = 0x075bcd15 and 987654321 = 0x3ade68b1, written in the sender's byte order.
constexpr Pattern kConnectLegacyLittle = {0x15, 0xcd, 0x5b, 0x07};
constexpr Pattern kConnectLegacyBig = {0x07, 0x5b, 0xcd, 0x15};
constexpr Pattern kReplyLegacyLittle = {0xb1, 0x68, 0xde, 0x3a};
constexpr Pattern kReplyLegacyBig = {0x3a, 0xde, 0x68, 0xb1};

bool matches(std::span<const std::uint8_t> datagram, const Pattern& pattern) {
  return std::equal(pattern.begin(), pattern.end(), datagram.begin());
}

}  // namespace

UdpHandshake classifyUdpHandshake(std::span<const std::uint8_t> datagram) {
  // Exactly four bytes: the client writes a 4-byte integer, and so does the server.
  if (datagram.size() != 4) {
    return UdpHandshake::Other;
  }
  if (matches(datagram, kConnectCurrent)) {
    return UdpHandshake::ConnectCurrent;
  }
  if (matches(datagram, kConnectLegacyLittle) || matches(datagram, kConnectLegacyBig)) {
    return UdpHandshake::ConnectLegacy;
  }
  if (matches(datagram, kReplyCurrent)) {
    return UdpHandshake::ReplyCurrent;
  }
  if (matches(datagram, kReplyLegacyLittle) || matches(datagram, kReplyLegacyBig)) {
    return UdpHandshake::ReplyLegacy;
  }
  return UdpHandshake::Other;
}

std::string_view udpHandshakeName(UdpHandshake kind) {
  switch (kind) {
    case UdpHandshake::ConnectCurrent:
      return "connect";
    case UdpHandshake::ConnectLegacy:
      return "connect (legacy)";
    case UdpHandshake::ReplyCurrent:
      return "reply";
    case UdpHandshake::ReplyLegacy:
      return "reply (legacy)";
    case UdpHandshake::Other:
      return "other";
  }
  return "other";
}

}  // namespace iperf3proxy::proto
