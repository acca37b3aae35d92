#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace iperf3proxy::proto {

// The first datagram of every iperf3 UDP stream and the server's answer (docs/PROTOCOL.md §4.2).
// The server never looks at the content, but every real client sends one of these, so anything else
// opening a flow is junk and must not reach the server, where it would become a stream.
enum class UdpHandshake {
  ConnectCurrent,  // "9876" (3.12+)
  ConnectLegacy,   // 123456789 as a 32-bit integer, either byte order (3.7-3.11)
  ReplyCurrent,    // "6789"
  ReplyLegacy,     // 987654321, either byte order
  Other,
};

UdpHandshake classifyUdpHandshake(std::span<const std::uint8_t> datagram);

inline bool isUdpConnect(UdpHandshake kind) {
  return kind == UdpHandshake::ConnectCurrent || kind == UdpHandshake::ConnectLegacy;
}

inline bool isUdpReply(UdpHandshake kind) {
  return kind == UdpHandshake::ReplyCurrent || kind == UdpHandshake::ReplyLegacy;
}

std::string_view udpHandshakeName(UdpHandshake kind);

}  // namespace iperf3proxy::proto
