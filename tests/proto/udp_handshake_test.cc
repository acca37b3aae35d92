#include "proto/udp_handshake.h"

#include <array>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

namespace iperf3proxy::proto {
namespace {

UdpHandshake classify(std::vector<std::uint8_t> bytes) {
  return classifyUdpHandshake(bytes);
}

TEST(UdpHandshakeTest, CurrentConnectAndReplyAreAscii) {
  EXPECT_EQ(classify({'9', '8', '7', '6'}), UdpHandshake::ConnectCurrent);
  EXPECT_EQ(classify({'6', '7', '8', '9'}), UdpHandshake::ReplyCurrent);
}

TEST(UdpHandshakeTest, LegacyValuesAreRecognisedInBothByteOrders) {
  // 123456789 and 987654321 as written by 3.7-3.11 on little- and big-endian hosts.
  EXPECT_EQ(classify({0x15, 0xcd, 0x5b, 0x07}), UdpHandshake::ConnectLegacy);
  EXPECT_EQ(classify({0x07, 0x5b, 0xcd, 0x15}), UdpHandshake::ConnectLegacy);
  EXPECT_EQ(classify({0xb1, 0x68, 0xde, 0x3a}), UdpHandshake::ReplyLegacy);
  EXPECT_EQ(classify({0x3a, 0xde, 0x68, 0xb1}), UdpHandshake::ReplyLegacy);
}

TEST(UdpHandshakeTest, AnythingElseIsOther) {
  EXPECT_EQ(classify({}), UdpHandshake::Other);
  EXPECT_EQ(classify({'9', '8', '7'}), UdpHandshake::Other);
  EXPECT_EQ(classify({'9', '8', '7', '6', '5'}), UdpHandshake::Other);
  EXPECT_EQ(classify({'h', 'e', 'l', 'o'}), UdpHandshake::Other);
  EXPECT_EQ(classify({0, 0, 0, 1}), UdpHandshake::Other);
}

TEST(UdpHandshakeTest, ConnectAndReplyPredicates) {
  EXPECT_TRUE(isUdpConnect(UdpHandshake::ConnectCurrent));
  EXPECT_TRUE(isUdpConnect(UdpHandshake::ConnectLegacy));
  EXPECT_FALSE(isUdpConnect(UdpHandshake::ReplyCurrent));
  EXPECT_TRUE(isUdpReply(UdpHandshake::ReplyLegacy));
  EXPECT_FALSE(isUdpReply(UdpHandshake::Other));
}

}  // namespace
}  // namespace iperf3proxy::proto
