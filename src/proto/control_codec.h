#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "proto/control_order.h"
#include "proto/cookie.h"
#include "proto/test_params.h"
#include "proto/wire.h"

namespace iperf3proxy::proto {

// ---- Events: what the codec learned from the bytes it consumed -------------------------------

struct CookieReceived {
  Cookie cookie;
};

struct StateReceived {
  Side from;
  State state;
};

struct ParamsReceived {
  TestParams params;
  std::size_t json_size;
};

// The params JSON was framed correctly but its content cannot be routed (docs/PROTOCOL.md §2.1).
struct ParamsRejected {
  ParamsFailure failure;
};

struct ResultsReceived {
  Side from;
  std::size_t json_size;
  std::uint64_t message_offset = 0;   // where the message (length, then JSON) began in that stream
  std::optional<std::string> json;    // the JSON itself, only when captured
  bool too_large_to_capture = false;  // capture was asked for, but the JSON is above the cap
};

struct ServerErrorReceived {
  std::int32_t i_errno;
  std::optional<std::int32_t> sys_errno;  // absent: iperf3 <= 3.18 auth failure sends one int
};

using ControlEvent = std::variant<CookieReceived,
                                  StateReceived,
                                  ParamsReceived,
                                  ParamsRejected,
                                  ResultsReceived,
                                  ServerErrorReceived>;

// ---- Errors -----------------------------------------------------------------------------------

enum class CodecError {
  BadCookie,         // first 37 bytes of the control connection are not a cookie
  UnknownState,      // a byte where a state was due, but not a state this side ever sends
  OutOfOrder,        // a message this side sends, but not at this point (see ControlOrder)
  JsonEmpty,         // a JSON length of zero (every iperf3 rejects it)
  JsonTooLarge,      // a JSON length above the configured cap
  TruncatedMessage,  // end of stream in the middle of a message
};

std::string_view codecErrorName(CodecError error);

struct CodecFailure {
  CodecError error;
  Side side;
  std::uint64_t offset;  // byte offset in that side's stream
  std::string detail;
};

struct FeedResult {
  // Bytes that were decoded and may be forwarded. Equal to the input size unless `failure` is set,
  // in which case it is the offset of the offending byte within this input.
  std::size_t consumed = 0;
  std::vector<ControlEvent> events;
  std::optional<CodecFailure> failure;
};

struct CodecLimits {
  std::uint32_t max_params_json = kDefaultMaxParamsJson;
  std::uint32_t max_results_json = kDefaultMaxResultsJson;
  std::uint32_t max_captured_results = kDefaultMaxCapturedResults;
};

// A pure decoder of one iperf3 control connection, both directions (bytes in, events out).
// It never touches a socket or a clock. The caller feeds each direction's bytes as they arrive,
// in any split, and forwards exactly `consumed` bytes. Because the caller forwards a message only
// after it has been decoded, the expectation for the reply (e.g. params JSON after
// PARAM_EXCHANGE) is always set before the peer can answer.
//
// It accepts only the messages each side may send next (ControlOrder): a message out of order
// (a second TEST_END, results before EXCHANGE_RESULTS, anything after the client's IPERF_DONE
// but CLIENT_TERMINATE, ...) fails like a byte that is no message at all, naming the state and
// the stage of the test.
//
// After an error the codec is poisoned: every later call returns the same failure.
class ControlCodec {
 public:
  explicit ControlCodec(CodecLimits limits = {});

  FeedResult feedClient(std::span<const std::uint8_t> bytes) { return feed(Side::Client, bytes); }

  FeedResult feedServer(std::span<const std::uint8_t> bytes) { return feed(Side::Server, bytes); }

  // Keep the server's results JSON and hand it out with its ResultsReceived event (the proxy
  // translates the server's report in it). Set before the server's EXCHANGE_RESULTS is fed.
  void captureServerResults() { server_.capture = true; }

  // While the server's results are being captured: where their message began in the server's
  // stream. The caller holds those bytes back until the event carries the whole JSON.
  std::optional<std::uint64_t> serverResultsCaptureStart() const;

  // End of stream from that side. Reports a message cut short, and completes a SERVER_ERROR that
  // carried only its first integer.
  FeedResult finish(Side side);

 private:
  enum class Expect : std::uint8_t { Cookie, State, JsonLength, JsonBody, ErrorPayload };

  struct Direction {
    Expect expect = Expect::State;
    JsonKind json_kind = JsonKind::Params;
    std::vector<std::uint8_t> partial;  // cookie, length, params body or error payload so far
    std::uint32_t json_length = 0;
    std::uint32_t json_remaining = 0;
    std::uint64_t offset = 0;          // bytes consumed on this side so far
    std::uint64_t message_offset = 0;  // where the current JSON message began
    bool capture = false;              // keep results JSON (server side only)
    bool capturing = false;            // a captured results message is in progress
    bool capture_skipped = false;      // this results message is above the capture cap
  };

  FeedResult feed(Side side, std::span<const std::uint8_t> bytes);

  // Each step consumes at least one byte from `bytes` starting at `pos`, or fails.
  std::optional<CodecFailure> step(Side side,
                                   std::span<const std::uint8_t> bytes,
                                   std::size_t& pos,
                                   std::vector<ControlEvent>& events);
  std::optional<CodecFailure> onStateByte(Side side,
                                          std::uint8_t byte,
                                          std::vector<ControlEvent>& events);
  std::optional<CodecFailure> onJsonLengthByte(Side side,
                                               std::uint8_t byte,
                                               std::uint64_t byte_offset,
                                               std::vector<ControlEvent>& events);
  void onJsonComplete(Side side, std::vector<ControlEvent>& events);
  // After every message: each direction that is between two messages expects the JSON it owes
  // now (ControlOrder::jsonDue), or a state.
  void syncExpectations();

  Direction& dir(Side side) { return side == Side::Client ? client_ : server_; }

  std::uint32_t capFor(JsonKind kind) const;

  CodecFailure fail(Side side, CodecError error, std::string detail) const;
  // "<what>; stage: <where the conversation is>", the detail of an order failure.
  std::string withStage(std::string what) const;

  CodecLimits limits_;
  ControlOrder order_;
  Direction client_;
  Direction server_;
  std::optional<CodecFailure> failure_;
};

}  // namespace iperf3proxy::proto
