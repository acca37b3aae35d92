// UdpSetupTurns: one test at a time per client address sets up UDP streams.

#include "pool/udp_setup_turns.h"

#include <gtest/gtest.h>

namespace iperf3proxy::pool {
namespace {

proto::Cookie cookie(char c) {
  std::array<std::uint8_t, proto::kCookieSize> bytes{};
  std::fill(bytes.begin(), bytes.end() - 1, static_cast<std::uint8_t>(c));
  return *proto::Cookie::parse(bytes);
}

TEST(UdpSetupTurns, TestsFromOneAddressTakeTurnsInOrder) {
  UdpSetupTurns turns;
  EXPECT_TRUE(turns.begin(cookie('a'), "192.0.2.1"));
  EXPECT_FALSE(turns.begin(cookie('b'), "192.0.2.1"));
  EXPECT_FALSE(turns.begin(cookie('c'), "192.0.2.1"));
  EXPECT_EQ(turns.holder("192.0.2.1"), cookie('a'));
  EXPECT_EQ(turns.waiting(), 2U);
  EXPECT_EQ(turns.end(cookie('a')), cookie('b'));
  EXPECT_EQ(turns.holder("192.0.2.1"), cookie('b'));
  EXPECT_EQ(turns.end(cookie('b')), cookie('c'));
  EXPECT_EQ(turns.end(cookie('c')), std::nullopt);
  EXPECT_EQ(turns.holder("192.0.2.1"), std::nullopt);
}

TEST(UdpSetupTurns, OtherAddressesDoNotWait) {
  UdpSetupTurns turns;
  EXPECT_TRUE(turns.begin(cookie('a'), "192.0.2.1"));
  EXPECT_TRUE(turns.begin(cookie('b'), "192.0.2.2"));
  EXPECT_TRUE(turns.begin(cookie('c'), "2001:db8::1"));
  EXPECT_EQ(turns.holder("192.0.2.2"), cookie('b'));
}

TEST(UdpSetupTurns, AWaitingTestThatLeavesGivesUpItsPlace) {
  UdpSetupTurns turns;
  ASSERT_TRUE(turns.begin(cookie('a'), "192.0.2.1"));
  ASSERT_FALSE(turns.begin(cookie('b'), "192.0.2.1"));
  ASSERT_FALSE(turns.begin(cookie('c'), "192.0.2.1"));
  EXPECT_EQ(turns.end(cookie('b')), std::nullopt);  // b went away while waiting
  EXPECT_EQ(turns.end(cookie('a')), cookie('c'));
  EXPECT_EQ(turns.end(cookie('z')), std::nullopt);  // unknown: nothing changes
  EXPECT_EQ(turns.holder("192.0.2.1"), cookie('c'));
}

TEST(UdpSetupTurns, AskingTwiceKeepsThePlace) {
  UdpSetupTurns turns;
  ASSERT_TRUE(turns.begin(cookie('a'), "192.0.2.1"));
  ASSERT_FALSE(turns.begin(cookie('b'), "192.0.2.1"));
  EXPECT_TRUE(turns.begin(cookie('a'), "192.0.2.1"));
  EXPECT_FALSE(turns.begin(cookie('b'), "192.0.2.1"));
  EXPECT_EQ(turns.waiting(), 1U);
}

}  // namespace
}  // namespace iperf3proxy::pool
