// Durations and rates on the command line.

#include "app/units.h"

#include <gtest/gtest.h>

namespace iperf3proxy::app {
namespace {

long ms(std::string_view text, BareUnit bare = BareUnit::Milliseconds) {
  const auto parsed = parseDurationMs(text, bare);
  EXPECT_TRUE(std::holds_alternative<long>(parsed)) << text;
  return std::holds_alternative<long>(parsed) ? std::get<long>(parsed) : -1;
}

bool refused(std::string_view text, BareUnit bare = BareUnit::Milliseconds) {
  return std::holds_alternative<UnitError>(parseDurationMs(text, bare));
}

TEST(Durations, EveryUnit) {
  EXPECT_EQ(ms("500ms"), 500);
  EXPECT_EQ(ms("30s"), 30'000);
  EXPECT_EQ(ms("2m"), 120'000);
  EXPECT_EQ(ms("1h"), 3'600'000);
  EXPECT_EQ(ms("0s"), 0);
}

TEST(Durations, ABareNumberIsInTheOptionsOwnUnit) {
  EXPECT_EQ(ms("30", BareUnit::Seconds), 30'000);  // --idle-timeout 30, as in iperf3
  EXPECT_EQ(ms("30", BareUnit::Milliseconds), 30);
  EXPECT_EQ(ms("30ms", BareUnit::Seconds), 30);
}

TEST(Durations, FractionsThatAreWholeMilliseconds) {
  EXPECT_EQ(ms("1.5s"), 1'500);
  EXPECT_EQ(ms("0.1s"), 100);  // exact, not 99
  EXPECT_EQ(ms(".5m"), 30'000);
  EXPECT_EQ(ms("2.5", BareUnit::Seconds), 2'500);
  EXPECT_TRUE(refused("1.5ms"));
  EXPECT_TRUE(refused("0.0001s"));
}

TEST(Durations, MalformedOrTooLongIsRefused) {
  for (const char* bad : {"", "s", "-1s", "1 s", "1S", "1sec", "1d", "1e3", "1.2.3s", "0x10",
                          "99999999999999999999", "1000000h"}) {
    EXPECT_TRUE(refused(bad)) << bad;
  }
}

std::uint64_t bps(std::string_view text) {
  const auto parsed = parseRateBps(text);
  EXPECT_TRUE(std::holds_alternative<std::uint64_t>(parsed)) << text;
  return std::holds_alternative<std::uint64_t>(parsed) ? std::get<std::uint64_t>(parsed) : 0;
}

TEST(Rates, IperfNotationInPowersOfAThousand) {
  EXPECT_EQ(bps("100M"), 100'000'000U);
  EXPECT_EQ(bps("100m"), 100'000'000U);
  EXPECT_EQ(bps("64K"), 64'000U);
  EXPECT_EQ(bps("1.5G"), 1'500'000'000U);
  EXPECT_EQ(bps("2T"), 2'000'000'000'000U);
  EXPECT_EQ(bps("12345"), 12'345U);
  EXPECT_EQ(bps("0"), 0U);
  EXPECT_EQ(bps("0.0015K"), 1U);  // rounded down to whole bits
}

TEST(Rates, MalformedOrTooLargeIsRefused) {
  for (const char* bad : {"", "M", "10MB", "10Mbit", "-1M", "10 M", "1e6", "100Q",
                          "20000000000000000000", "99999999T"}) {
    EXPECT_TRUE(std::holds_alternative<UnitError>(parseRateBps(bad))) << bad;
  }
}

}  // namespace
}  // namespace iperf3proxy::app
