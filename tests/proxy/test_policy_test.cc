// The per-test rules (--max-duration, --max-streams, --max-bitrate) and the code each client
// version is told.

#include "proxy/test_policy.h"

#include <gtest/gtest.h>

#include "proto/wire.h"

namespace iperf3proxy::proxy {
namespace {

proto::TestParams tcp(int parallel, std::uint64_t bitrate = 0, const char* version = "3.12") {
  proto::TestParams params;
  params.streams_per_direction = parallel;
  params.bitrate_bps = bitrate;
  params.client_version = version;
  return params;
}

proto::TestParams bidir(int parallel, std::uint64_t bitrate = 0) {
  proto::TestParams params = tcp(parallel, bitrate);
  params.mode = proto::TestMode::Bidirectional;
  return params;
}

proto::TestParams udp(int parallel, std::uint64_t bitrate, const char* version = "3.12") {
  proto::TestParams params = tcp(parallel, bitrate, version);
  params.transport = proto::Transport::Udp;
  return params;
}

EdgePolicy streamsCap(int cap) {
  EdgePolicy policy;
  policy.max_streams = cap;
  return policy;
}

EdgePolicy bitrateCap(std::uint64_t cap) {
  EdgePolicy policy;
  policy.max_bitrate_bps = cap;
  return policy;
}

const Limits kNoLimits{};

TEST(TestPolicy, NothingIsRefusedWithoutCaps) {
  EXPECT_EQ(checkTestPolicy(bidir(128), kNoLimits, EdgePolicy{}), std::nullopt);
  EXPECT_EQ(checkTestPolicy(udp(8, 0), kNoLimits, EdgePolicy{}), std::nullopt);
}

TEST(TestPolicy, StreamsCountEveryDataStreamBidirTwice) {
  EXPECT_EQ(checkTestPolicy(tcp(4), kNoLimits, streamsCap(4)), std::nullopt);
  EXPECT_EQ(checkTestPolicy(bidir(2), kNoLimits, streamsCap(4)), std::nullopt);
  const auto refusal = checkTestPolicy(bidir(3), kNoLimits, streamsCap(4));
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->i_errno, proto::ierrno::kNumStreams);
  EXPECT_EQ(refusal->reason, CloseReason::TooManyStreams);
  EXPECT_EQ(refusal->detail, "6 data streams (-P 3 --bidir) are above --max-streams 4");
  EXPECT_NE(checkTestPolicy(tcp(5), kNoLimits, streamsCap(4)), std::nullopt);
}

TEST(TestPolicy, BitrateIsRateTimesStreamsAsIperf3SumsIt) {
  const EdgePolicy cap = bitrateCap(100'000'000);
  EXPECT_EQ(checkTestPolicy(udp(1, 100'000'000), kNoLimits, cap), std::nullopt);
  EXPECT_EQ(checkTestPolicy(tcp(4, 25'000'000), kNoLimits, cap), std::nullopt);
  EXPECT_EQ(checkTestPolicy(bidir(2, 25'000'000), kNoLimits, cap), std::nullopt);
  const auto refusal = checkTestPolicy(bidir(2, 30'000'000), kNoLimits, cap);
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->reason, CloseReason::BitrateExceeded);
  EXPECT_EQ(refusal->detail, "-b 30M x 4 streams is above --max-bitrate 100M");
  EXPECT_NE(checkTestPolicy(udp(1, 100'000'001), kNoLimits, cap), std::nullopt);
}

TEST(TestPolicy, NoRateLimitIsAboveEveryCap) {
  const EdgePolicy cap = bitrateCap(1'000'000'000);
  const auto unlimited_udp = checkTestPolicy(udp(1, 0), kNoLimits, cap);
  ASSERT_TRUE(unlimited_udp.has_value());
  EXPECT_EQ(unlimited_udp->detail, "no -b limit (-b 0) is above --max-bitrate 1G");
  const auto default_tcp = checkTestPolicy(tcp(1, 0), kNoLimits, cap);
  ASSERT_TRUE(default_tcp.has_value());
  EXPECT_EQ(default_tcp->detail, "no -b limit (TCP's default) is above --max-bitrate 1G");
  // A rate that overflows when multiplied by the streams is above it too.
  EXPECT_NE(checkTestPolicy(bidir(128, ~std::uint64_t{0} / 2), kNoLimits, cap), std::nullopt);
}

TEST(TestPolicy, EachClientHearsACodeItsVersionPrintsAMessageFor) {
  const EdgePolicy cap = bitrateCap(1'000'000);
  // IETOTALRATE came with --server-bitrate-limit in 3.9.
  EXPECT_EQ(checkTestPolicy(udp(1, 0, "3.9"), kNoLimits, cap)->i_errno, proto::ierrno::kTotalRate);
  EXPECT_EQ(checkTestPolicy(udp(1, 0, "3.21+"), kNoLimits, cap)->i_errno,
            proto::ierrno::kTotalRate);
  EXPECT_EQ(checkTestPolicy(udp(1, 0, "3.8"), kNoLimits, cap)->i_errno, proto::ierrno::kAuthTest);
  EXPECT_EQ(checkTestPolicy(udp(1, 0, ""), kNoLimits, cap)->i_errno, proto::ierrno::kAuthTest);
  // IEMAXSERVERTESTDURATIONEXCEEDED came with --server-max-duration in 3.20.
  Limits limits;
  limits.max_duration_s = 5;
  proto::TestParams long_test = tcp(1, 0, "3.20");
  long_test.duration_s = 6;
  EXPECT_EQ(checkTestPolicy(long_test, limits, EdgePolicy{})->i_errno,
            proto::ierrno::kMaxServerTestDuration);
  long_test.client_version = "3.17.1";
  EXPECT_EQ(checkTestPolicy(long_test, limits, EdgePolicy{})->i_errno, proto::ierrno::kDuration);
}

TEST(TestPolicy, ClientVersions) {
  EXPECT_TRUE(clientAtLeast("3.12", 3, 9));
  EXPECT_TRUE(clientAtLeast("3.9", 3, 9));
  EXPECT_FALSE(clientAtLeast("3.8.1", 3, 9));
  EXPECT_TRUE(clientAtLeast("4.0", 3, 20));
  EXPECT_TRUE(clientAtLeast("3.21+", 3, 20));
  for (const char* unreadable : {"", "3", "three.twelve", ".12", "3."}) {
    EXPECT_FALSE(clientAtLeast(unreadable, 3, 0)) << unreadable;
  }
}

}  // namespace
}  // namespace iperf3proxy::proxy
