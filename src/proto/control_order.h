#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proto/wire.h"

namespace iperf3proxy::proto {

// Which peer wrote the bytes.
enum class Side : std::uint8_t { Client, Server };

std::string_view sideName(Side side);

// The two kinds of JSON message on the control connection.
enum class JsonKind : std::uint8_t { Params, Results };

// The order of one iperf3 control conversation: which message each side may send next, given
// what both sides have sent so far. Pure bookkeeping, no bytes: ControlCodec frames the bytes
// and asks this class before it accepts a message.
//
// The rules are what iperf3 3.7 to master actually send (docs/PROTOCOL.md §1.3-§1.7, §5.1; iperf3's
// iperf_client_api.c, iperf_server_api.c, iperf_api.c):
//   client: cookie, params (after PARAM_EXCHANGE), TEST_END (once, after TEST_RUNNING), results
//     (after EXCHANGE_RESULTS), IPERF_DONE. IPERF_DONE is also every client's abort and may come
//     at any point; CLIENT_TERMINATE (a signal) too. Each of the two at most once, and after
//     either only the other one. No client sends TEST_START (the server would take it as a
//     no-op), so it is refused like any byte no client sends.
//   server: PARAM_EXCHANGE, CREATE_STREAMS (after the client's params), TEST_START,
//     TEST_RUNNING, EXCHANGE_RESULTS (after the client's TEST_END), results (after the client's
//     results), DISPLAY_RESULTS. ACCESS_DENIED only in place of PARAM_EXCHANGE, and then
//     nothing. SERVER_ERROR and SERVER_TERMINATE at any time, and after either only these two
//     (3.21+ send SERVER_ERROR from their cleanup, also after a test that went well, and after
//     a failure the exchange already reported: at most twice; SERVER_TERMINATE once).
// Both directions run at once: a message may cross one from the peer (a client's IPERF_DONE
// while the server's TEST_RUNNING is on its way). Conditions on the peer are therefore only
// ever "the peer has sent X": the proxy forwards a message only after the codec decoded it, so
// a sender can never have seen more of its peer than this class has recorded.
class ControlOrder {
 public:
  // Whether `side` ever sends `state` (anything else is not an iperf3 message from that side).
  static bool sends(Side side, State state);

  // The client's cookie is complete: the conversation begins.
  void recordCookie() { cookie_ = true; }

  // nullopt if `side` may send `state` (one it sends()) now; otherwise why not, for the log
  // ("again", "before TEST_RUNNING", ...). Changes nothing.
  std::optional<std::string> refusal(Side side, State state) const;
  void record(Side side, State state);

  // The JSON message `side` owes next, if any: the client's params after PARAM_EXCHANGE, both
  // sides' results after EXCHANGE_RESULTS. Until it has begun, the side may still send a state
  // instead (a client's abort, a server's error).
  std::optional<JsonKind> jsonDue(Side side) const;
  // nullopt if the JSON `side` owes may begin now; otherwise why not.
  std::optional<std::string> jsonRefusal(Side side) const;
  void recordJson(Side side);

  // Where the conversation is, for log lines: "stream creation", "test end, after the client's
  // IPERF_DONE", ...
  std::string stage() const;

 private:
  // How far the server got along its normal sequence; errors do not move it.
  enum class ServerProgress : std::uint8_t {
    Connected,        // nothing sent yet
    ParamExchange,    // PARAM_EXCHANGE
    CreateStreams,    // CREATE_STREAMS
    TestStart,        // TEST_START
    TestRunning,      // TEST_RUNNING
    ExchangeResults,  // EXCHANGE_RESULTS; its results are due
    ResultsSent,      // its results JSON
    ResultsShown,     // DISPLAY_RESULTS
  };

  std::optional<std::string> serverRefusal(State state) const;
  std::optional<std::string> clientRefusal(State state) const;

  bool serverEnded() const { return server_errors_ > 0 || server_terminated_ || server_denied_; }

  bool cookie_ = false;
  // Server.
  ServerProgress server_ = ServerProgress::Connected;
  int server_errors_ = 0;
  bool server_terminated_ = false;
  bool server_denied_ = false;
  // Client.
  bool params_ = false;
  bool test_end_ = false;
  bool client_results_ = false;
  bool client_done_ = false;
  bool client_terminated_ = false;
};

}  // namespace iperf3proxy::proto
