#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace iperf3proxy::proto {

enum class Transport { Tcp, Udp, Sctp };

// The test as the *client* sees it: who sends test data.
enum class TestMode { Forward, Reverse, Bidirectional };

std::string_view transportName(Transport transport);
std::string_view testModeName(TestMode mode);

// The shape of one test, read from the client's parameters JSON by the same rules the iperf3
// server applies (docs/PROTOCOL.md §2.1): keys are case-insensitive and the first match wins,
// unknown keys are ignored, and the flags `tcp`, `udp`, `sctp`, `reverse` and `bidirectional` count
// by their presence, whatever their value. Numbers are read as iperf3 reads them (cJSON's valueint,
// then the server's `int` field: "time":4294967297 is 1), so the proxy and the server see the same
// test.
struct TestParams {
  Transport transport = Transport::Tcp;
  TestMode mode = TestMode::Forward;
  int streams_per_direction = 1;  // `parallel`
  // `time` and `omit` as the server's `int` fields hold them (negative ones included). Kept in
  // 64 bits so that sums and products of them and the proxy's own limits cannot overflow.
  std::int64_t duration_s = 10;  // `time`; 0 when the test ends on bytes or blocks
  std::int64_t omit_s = 0;
  // The client announced the proxy's role-byte extension (docs/ROLE_BYTE.md): every data
  // connection carries one byte after the cookie naming its role and index.
  bool role_byte = false;
  std::string client_version;
  // `bandwidth` (-b): the rate each stream is paced to, in bits per second, as the server's
  // uint64 field holds it; 0 is no limit (TCP without -b sends no key; UDP -b 0 sends 0).
  std::uint64_t bitrate_bps = 0;
  // `get_server_output` is present: the server's results will carry its own report of the test,
  // which names addresses the proxy translates (proto/server_report.h). Presence alone decides:
  // a server that ignores the key sends no report, and then there is nothing to translate.
  bool get_server_output = false;

  // Socket options the client asked for. They apply to the hop they are set on only, so the
  // proxy applies them to its own data sockets too (docs/PROTOCOL.md §5.5): without that, -C, -S,
  // -w, -N, -M and --fq-rate would silently change meaning behind a proxy.
  std::optional<std::string> congestion;  // `congestion` (-C)
  std::optional<int> tos;                 // `TOS` (-S, --dscp)
  std::optional<int> window;              // `window` (-w): SO_SNDBUF and SO_RCVBUF
  std::optional<int> mss;                 // `MSS` (-M)
  std::optional<std::uint64_t> fq_rate;   // `fqrate` (--fq-rate), bits per second, nonzero
  bool nodelay = false;                   // `nodelay` (-N), a presence flag

  int uploadStreams() const;    // client -> server data streams
  int downloadStreams() const;  // server -> client data streams

  int totalStreams() const { return uploadStreams() + downloadStreams(); }
};

// The parameters key that announces the role-byte extension. The iperf3 server ignores unknown
// keys, so the key itself is forwarded unchanged.
inline constexpr std::string_view kRoleByteKey = "role_byte";

enum class ParamsError {
  InvalidJson,     // not a JSON object
  AmbiguousValue,  // a value iperf3 versions read differently (e.g. "reverse":1, "time":"5")
  BadParallel,     // `parallel` outside 1..128
};

std::string_view paramsErrorName(ParamsError error);

struct ParamsFailure {
  ParamsError error;
  std::string detail;  // the offending key, for the log line
};

std::variant<TestParams, ParamsFailure> parseTestParams(std::string_view json);

}  // namespace iperf3proxy::proto
