// Unit test: RecentCookies, the front's memory of tests that ended a short while ago (a data
// connection with such a cookie is refused instead of starting a test of its own). Time is
// passed in.

#include "proxy/recent_cookies.h"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace iperf3proxy::proxy {
namespace {

using namespace std::chrono_literals;
using Clock = RecentCookies::Clock;

proto::Cookie cookie(char first) {
  std::vector<std::uint8_t> bytes(36, 'a');
  bytes[0] = static_cast<std::uint8_t>(first);
  bytes.push_back(0);
  return *proto::Cookie::parse(bytes);
}

TEST(RecentCookiesTest, RemembersAnEndedTestForItsWindowOnly) {
  RecentCookies recent(60s, 16);
  const Clock::time_point t0{};
  recent.add(cookie('a'), t0);
  EXPECT_TRUE(recent.contains(cookie('a'), t0));
  EXPECT_TRUE(recent.contains(cookie('a'), t0 + 60s));
  EXPECT_FALSE(recent.contains(cookie('b'), t0 + 1s));
  EXPECT_FALSE(recent.contains(cookie('a'), t0 + 60s + 1ms));
  EXPECT_EQ(recent.size(), 0U);
}

TEST(RecentCookiesTest, KeepsTheNewestWhenFull) {
  RecentCookies recent(60s, 3);
  const Clock::time_point t0{};
  for (char c : std::string("abcd")) {
    recent.add(cookie(c), t0 + std::chrono::seconds(c - 'a'));
  }
  EXPECT_EQ(recent.size(), 3U);
  EXPECT_FALSE(recent.contains(cookie('a'), t0 + 4s));
  for (char c : std::string("bcd")) {
    EXPECT_TRUE(recent.contains(cookie(c), t0 + 4s)) << c;
  }
}

TEST(RecentCookiesTest, AddingTwiceKeepsOneEntryFromTheFirstTime) {
  RecentCookies recent(10s, 2);
  const Clock::time_point t0{};
  recent.add(cookie('a'), t0);
  recent.add(cookie('a'), t0 + 5s);
  recent.add(cookie('b'), t0 + 6s);
  EXPECT_EQ(recent.size(), 2U);
  EXPECT_TRUE(recent.contains(cookie('b'), t0 + 10s));
  EXPECT_FALSE(recent.contains(cookie('a'), t0 + 10s + 1ms));
}

}  // namespace
}  // namespace iperf3proxy::proxy
