#pragma once

// iperf3 wire constants, in one place. Values are checked against iperf3 3.7..master
// (see docs/PROTOCOL.md §1.3).

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace iperf3proxy::proto {

// 36 characters from [a-z2-7] followed by one NUL byte.
inline constexpr std::size_t kCookieSize = 37;

// A state message is one *signed* byte; ACCESS_DENIED and SERVER_ERROR are negative.
enum class State : std::int8_t {
  TestStart = 1,
  TestRunning = 2,
  ResultRequest = 3,
  TestEnd = 4,
  StreamBegin = 5,
  StreamRunning = 6,
  StreamEnd = 7,
  AllStreamsEnd = 8,
  ParamExchange = 9,
  CreateStreams = 10,
  ServerTerminate = 11,
  ClientTerminate = 12,
  ExchangeResults = 13,
  DisplayResults = 14,
  IperfStart = 15,
  IperfDone = 16,
  AccessDenied = -1,
  ServerError = -2,
};

// The only place a wire byte becomes a State: the byte is a signed char on the wire.
constexpr State stateFromWire(std::uint8_t byte) {
  return static_cast<State>(static_cast<std::int8_t>(byte));
}

constexpr std::uint8_t stateToWire(State state) {
  return static_cast<std::uint8_t>(static_cast<std::int8_t>(state));
}

std::string_view stateName(State state);

// iperf3 error numbers (i_errno) that the proxy itself sends in a SERVER_ERROR message, so that
// an unmodified client prints a familiar message.
// The codes (iperf3's i_errno, src/iperf_api.h) the proxy sends in a SERVER_ERROR, and the text a
// client prints for each (src/iperf_error.c). A client adopts the code as its own error; one it
// does not know it prints as a bare number, so each is sent only to clients that know it.
namespace ierrno {
// "test duration too long (maximum = 86400 seconds)" (3.18+: "test duration valid values are 0
// to 86400 seconds"): every version.
inline constexpr std::int32_t kDuration = 5;
// "number of parallel streams too large (maximum = 128)": every version.
inline constexpr std::int32_t kNumStreams = 6;
// "total required bandwidth is larger than server limit": 3.9+.
inline constexpr std::int32_t kTotalRate = 27;
// "client's requested duration exceeds the server's maximum permitted limit": 3.20+.
inline constexpr std::int32_t kMaxServerTestDuration = 37;
inline constexpr std::int32_t kConnect = 103;     // "unable to connect to server"
inline constexpr std::int32_t kRecvParams = 114;  // "unable to receive parameters from client"
inline constexpr std::int32_t kProtocol = 131;    // "protocol does not exist"
// "test authorization failed": every version (authentication came in 3.2).
inline constexpr std::int32_t kAuthTest = 142;
}  // namespace ierrno

// SERVER_ERROR carries two big-endian int32: i_errno, then errno. iperf3 <= 3.18 sends only the
// first one on an authentication failure and then closes.
inline constexpr std::size_t kServerErrorPayloadSize = 8;

// Size caps on the JSON messages. iperf3 >= 3.18 refuses params above 8 KiB; older servers take
// any size, so the proxy's default is more generous but still bounded. Results are buffered only
// when the proxy translates the server's report in them (--get-server-output).
inline constexpr std::uint32_t kDefaultMaxParamsJson = 64 * 1024;
inline constexpr std::uint32_t kDefaultMaxResultsJson = 64 * 1024 * 1024;
// Server results above this size are forwarded without translating the server's report in them:
// translating takes several times the message in memory (the held bytes, the parsed tree, the
// new text).
inline constexpr std::uint32_t kDefaultMaxCapturedResults = 16 * 1024 * 1024;

// A JSON message as iperf3 frames it: its length as a big-endian uint32, then the text.
std::vector<std::uint8_t> encodeJsonMessage(std::string_view json);

// A SERVER_ERROR message: the state byte, then i_errno and errno as big-endian int32.
std::vector<std::uint8_t> encodeServerError(std::int32_t i_errno, std::int32_t sys_errno);

// iperf3 accepts at most 128 parallel streams per direction.
inline constexpr int kMaxStreamsPerDirection = 128;

}  // namespace iperf3proxy::proto
