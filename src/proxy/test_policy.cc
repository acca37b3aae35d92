#include "proxy/test_policy.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <utility>

#include <spdlog/fmt/fmt.h>

#include "proto/wire.h"

namespace iperf3proxy::proxy {
namespace {

// A rate in iperf3's notation ("100M", "1.5G"), as the operator wrote --max-bitrate.
std::string rateText(std::uint64_t bps) {
  constexpr std::array<std::pair<std::uint64_t, char>, 4> kUnits = {
      {{1'000'000'000'000, 'T'}, {1'000'000'000, 'G'}, {1'000'000, 'M'}, {1'000, 'K'}}};
  for (const auto& [unit, letter] : kUnits) {
    if (bps >= unit && bps % (unit / 10) == 0) {
      return bps % unit == 0 ? fmt::format("{}{}", bps / unit, letter)
                             : fmt::format("{}.{}{}", bps / unit, bps % unit / (unit / 10), letter);
    }
  }
  return std::to_string(bps);
}

std::optional<TestRefusal> checkDuration(const proto::TestParams& params, long cap) {
  // Both numbers come from the client: compared without adding them, so nothing can overflow.
  const auto positive = [](std::int64_t value) {
    return value < 0 ? std::int64_t{0} : value;
  };
  const std::int64_t duration = positive(params.duration_s);
  const std::int64_t omit = positive(params.omit_s);
  if (cap <= 0 || (duration <= cap && omit <= cap - duration)) {
    return std::nullopt;
  }
  // Refused before the server sees the parameters, the way 3.20+ servers refuse a test above
  // --server-max-duration, and with their code to the clients that know it; older clients
  // know only "test duration too long", whose maximum is iperf3's own (86400 s).
  return TestRefusal{
      clientAtLeast(params.client_version, 3, 20) ? proto::ierrno::kMaxServerTestDuration
                                                  : proto::ierrno::kDuration,
      CloseReason::DurationExceeded,
      fmt::format("-t {} -O {} is above --max-duration {}", params.duration_s, params.omit_s, cap)};
}

std::optional<TestRefusal> checkStreams(const proto::TestParams& params, int cap) {
  if (cap <= 0 || params.totalStreams() <= cap) {
    return std::nullopt;
  }
  // "number of parallel streams too large": every client prints it, with iperf3's own maximum
  // (128), not the proxy's.
  return TestRefusal{
      proto::ierrno::kNumStreams, CloseReason::TooManyStreams,
      fmt::format("{} data streams (-P {}{}) are above --max-streams {}", params.totalStreams(),
                  params.streams_per_direction,
                  params.mode == proto::TestMode::Bidirectional ? " --bidir" : "", cap)};
}

std::optional<TestRefusal> checkBitrate(const proto::TestParams& params, std::uint64_t cap) {
  if (cap == 0) {
    return std::nullopt;
  }
  // What iperf3's own --server-bitrate-limit checks before a test starts: each stream's -b
  // times the streams (both directions of --bidir). That check lets a test with no -b (0: no
  // limit, TCP's default, UDP's -b 0) through and ends it only once its measured average is too
  // high; the proxy refuses it up front instead, since both iperf3 ends pace their own sending
  // to -b and nothing else would hold such a test to the cap.
  // At least one: the parser gives every test 1 to 128 streams a direction.
  const auto streams =
      std::max<std::uint64_t>(1, static_cast<std::uint64_t>(params.totalStreams()));
  const std::uint64_t rate = params.bitrate_bps;
  std::string why;
  if (rate == 0) {
    why = fmt::format("no -b limit ({}) is above --max-bitrate {}",
                      params.transport == proto::Transport::Udp ? "-b 0" : "TCP's default",
                      rateText(cap));
  } else if (rate > cap / streams) {
    why = fmt::format("-b {} x {} streams is above --max-bitrate {}", rateText(rate), streams,
                      rateText(cap));
  } else {
    return std::nullopt;
  }
  // "total required bandwidth is larger than server limit" is 3.9+; older clients would print
  // a bare number, so they hear "test authorization failed", which is as true.
  return TestRefusal{clientAtLeast(params.client_version, 3, 9) ? proto::ierrno::kTotalRate
                                                                : proto::ierrno::kAuthTest,
                     CloseReason::BitrateExceeded, why};
}

}  // namespace

bool clientAtLeast(std::string_view client_version, int major, int minor) {
  int have_major = 0;
  int have_minor = 0;
  const char* begin = client_version.data();
  const char* end = begin + client_version.size();
  auto [dot, major_error] = std::from_chars(begin, end, have_major);
  if (major_error != std::errc() || dot == end || *dot != '.') {
    return false;
  }
  auto [rest, minor_error] = std::from_chars(dot + 1, end, have_minor);
  if (minor_error != std::errc()) {
    return false;
  }
  return have_major > major || (have_major == major && have_minor >= minor);
}

std::optional<TestRefusal> checkTestPolicy(const proto::TestParams& params,
                                           const Limits& limits,
                                           const EdgePolicy& policy) {
  if (params.transport == proto::Transport::Sctp) {
    return TestRefusal{proto::ierrno::kProtocol, CloseReason::UnsupportedTest,
                       "SCTP cannot be carried by a TCP/UDP proxy"};
  }
  if (auto refusal = checkDuration(params, limits.max_duration_s)) {
    return refusal;
  }
  if (auto refusal = checkStreams(params, policy.max_streams)) {
    return refusal;
  }
  return checkBitrate(params, policy.max_bitrate_bps);
}

}  // namespace iperf3proxy::proxy
