// libFuzzer target for proto::ControlCodec: both directions of one control connection, interleaved
// as the input says, with the codec's contract checked after every call.
//
// Input: a sequence of operations, each starting with one header byte h (fuzz/make_seeds.py
// writes the same format):
//   h = 00LLLLLL            the client sends the next L (0..63) bytes
//   h = 01LLLLLL            the server sends the next L (0..63) bytes
//   h = 10SLLLLL, then l    side S (0 client, 1 server) sends the next L*256+l (0..8191) bytes
//   h = 11xxxxxS            end of stream from side S (0 client, 1 server)
// A length beyond the end of the input is cut to what is left.
//
// Each input runs three times on fresh codecs: twice with every operation fed in one call, which
// must give identical records (determinism), and once one byte per call, which must give the same
// record again (the outcome never depends on how a side's bytes were split into reads).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fuzz/alloc_watch.h"
#include "fuzz/fuzz_check.h"
#include "fuzz/params_invariants.h"
#include "proto/control_codec.h"
#include "proto/cookie.h"
#include "proto/wire.h"

namespace iperf3proxy::fuzz {
namespace {

using proto::CodecFailure;
using proto::ControlEvent;
using proto::FeedResult;
using proto::Side;
using proto::State;

// The limits the proxy runs with.
constexpr proto::CodecLimits kLimits{};

// ---- Decoding the input -----------------------------------------------------------------------

struct Op {
  Side side = Side::Client;
  bool finish = false;
  std::span<const std::uint8_t> bytes;
};

std::vector<Op> decodeOps(std::span<const std::uint8_t> input) {
  std::vector<Op> ops;
  std::size_t pos = 0;
  while (pos < input.size()) {
    const std::uint8_t header = input[pos++];
    const unsigned kind = header >> 6u;
    if (kind == 3) {
      ops.push_back({(header & 1u) != 0 ? Side::Server : Side::Client, true, {}});
      continue;
    }
    Op op;
    std::size_t length = 0;
    if (kind == 2) {
      op.side = (header & 0x20u) != 0 ? Side::Server : Side::Client;
      length = std::size_t{header & 0x1fu} << 8u;
      if (pos < input.size()) {
        length |= std::size_t{input[pos++]};
      }
    } else {
      op.side = kind == 0 ? Side::Client : Side::Server;
      length = header & 0x3fu;
    }
    length = std::min(length, input.size() - pos);
    op.bytes = input.subspan(pos, length);
    pos += length;
    ops.push_back(op);
  }
  return ops;
}

// ---- A printable record of what the codec said ------------------------------------------------

struct EventPrinter {
  std::string operator()(const proto::CookieReceived& event) const {
    return "cookie " + std::string(event.cookie.text());
  }

  std::string operator()(const proto::StateReceived& event) const {
    return std::string(proto::sideName(event.from)) + " " +
           std::string(proto::stateName(event.state)) + " (" +
           std::to_string(static_cast<int>(event.state)) + ")";
  }

  std::string operator()(const proto::ParamsReceived& event) const {
    const proto::TestParams& p = event.params;
    return "params " + std::string(proto::transportName(p.transport)) + "/" +
           std::string(proto::testModeName(p.mode)) + " P" +
           std::to_string(p.streams_per_direction) + " t" + std::to_string(p.duration_s) + " O" +
           std::to_string(p.omit_s) + " rb" + (p.role_byte ? "1" : "0") + " v[" + p.client_version +
           "] (" + std::to_string(event.json_size) + " B)";
  }

  std::string operator()(const proto::ParamsRejected& event) const {
    return "params rejected: " + std::string(proto::paramsErrorName(event.failure.error)) + " (" +
           event.failure.detail + ")";
  }

  std::string operator()(const proto::ResultsReceived& event) const {
    return std::string(proto::sideName(event.from)) + " results (" +
           std::to_string(event.json_size) + " B)";
  }

  std::string operator()(const proto::ServerErrorReceived& event) const {
    return "server error " + std::to_string(event.i_errno) + "/" +
           (event.sys_errno ? std::to_string(*event.sys_errno) : std::string("-"));
  }
};

std::string render(const ControlEvent& event) {
  return std::visit(EventPrinter{}, event);
}

std::string render(const CodecFailure& failure) {
  return std::string(proto::codecErrorName(failure.error)) + " from " +
         std::string(proto::sideName(failure.side)) + " at " + std::to_string(failure.offset) +
         " (" + failure.detail + ")";
}

// ---- The contract -----------------------------------------------------------------------------

// The protocol's order, written out again on purpose: an oracle that called the codec's own
// table (proto::ControlOrder) would agree with any mistake in it. Here every message is a rule
// over how often each message was sent so far (docs/PROTOCOL.md §1.3-§1.7 and §5.1, iperf3 3.7 to
// master).
class OrderModel {
 public:
  // A message on the control connection: a state byte, or one of these.
  enum class Message : int { Cookie = 100, Params, Results };

  static int key(State state) { return static_cast<int>(state); }

  static int key(Message message) { return static_cast<int>(message); }

  // States some client, some server ever sends.
  static bool sends(Side side, State state) {
    static const std::set<State> kClient = {State::TestEnd, State::ClientTerminate,
                                            State::IperfDone};
    static const std::set<State> kServer = {
        State::ParamExchange,  State::CreateStreams,   State::TestStart,
        State::TestRunning,    State::ServerTerminate, State::ExchangeResults,
        State::DisplayResults, State::AccessDenied,    State::ServerError};
    return (side == Side::Client ? kClient : kServer).count(state) > 0;
  }

  bool allows(Side side, int message) const {
    const auto c = [this](int m) {
      return count(Side::Client, m);
    };
    const auto s = [this](int m) {
      return count(Side::Server, m);
    };
    if (side == Side::Client) {
      const bool ended = c(key(State::IperfDone)) + c(key(State::ClientTerminate)) > 0;
      if (message == key(Message::Cookie)) {
        return c(message) == 0;
      }
      if (c(key(Message::Cookie)) == 0) {
        return false;
      }
      if (message == key(Message::Params)) {
        return !ended && s(key(State::ParamExchange)) == 1 && c(message) == 0;
      }
      if (message == key(Message::Results)) {
        return !ended && s(key(State::ExchangeResults)) == 1 && c(message) == 0;
      }
      if (message == key(State::TestEnd)) {
        return !ended && s(key(State::TestRunning)) == 1 && c(message) == 0;
      }
      if (message == key(State::IperfDone) || message == key(State::ClientTerminate)) {
        return c(message) == 0;
      }
      return false;
    }
    if (c(key(Message::Cookie)) == 0 || s(key(State::AccessDenied)) > 0) {
      return false;
    }
    if (message == key(State::ServerError)) {
      return s(message) < 2;
    }
    if (message == key(State::ServerTerminate)) {
      return s(message) == 0;
    }
    if (s(key(State::ServerError)) + s(key(State::ServerTerminate)) > 0) {
      return false;
    }

    // The normal sequence: each message once, after the one before it (and two after the
    // client's message they answer).
    struct Rule {
      int message;
      int after_server;  // -1: the first
      int after_client;  // -1: none
    };

    static const Rule kRules[] = {
        {key(State::AccessDenied), -1, -1},
        {key(State::ParamExchange), -1, -1},
        {key(State::CreateStreams), key(State::ParamExchange), key(Message::Params)},
        {key(State::TestStart), key(State::CreateStreams), -1},
        {key(State::TestRunning), key(State::TestStart), -1},
        {key(State::ExchangeResults), key(State::TestRunning), key(State::TestEnd)},
        {key(Message::Results), key(State::ExchangeResults), key(Message::Results)},
        {key(State::DisplayResults), key(Message::Results), -1},
    };
    for (const Rule& rule : kRules) {
      if (rule.message != message) {
        continue;
      }
      const bool first = rule.after_server == -1 ? sent_[1].empty() : s(rule.after_server) == 1;
      return first && s(message) == 0 && (rule.after_client == -1 || c(rule.after_client) == 1);
    }
    return false;
  }

  // The JSON message a side owes now, if any (the codec then reads a length where no state
  // stands out): the client's params or results, the server's results.
  std::optional<Message> jsonDue(Side side) const {
    const auto c = [this](int m) {
      return count(Side::Client, m);
    };
    const auto s = [this](int m) {
      return count(Side::Server, m);
    };
    if (side == Side::Server) {
      const bool due = s(key(State::ExchangeResults)) == 1 && s(key(Message::Results)) == 0 &&
                       s(key(State::ServerError)) + s(key(State::ServerTerminate)) == 0;
      return due ? std::optional(Message::Results) : std::nullopt;
    }
    if (c(key(State::IperfDone)) + c(key(State::ClientTerminate)) > 0) {
      return std::nullopt;
    }
    if (s(key(State::ParamExchange)) == 1 && c(key(Message::Params)) == 0) {
      return Message::Params;
    }
    if (s(key(State::ExchangeResults)) == 1 && c(key(Message::Results)) == 0) {
      return Message::Results;
    }
    return std::nullopt;
  }

  void record(Side side, int message) { ++sent_[index(side)][message]; }

 private:
  static std::size_t index(Side side) { return side == Side::Client ? 0 : 1; }

  int count(Side side, int message) const {
    const auto& sent = sent_[index(side)];
    const auto it = sent.find(message);
    return it == sent.end() ? 0 : it->second;
  }

  std::array<std::map<int, int>, 2> sent_;
};

bool isCookieCharacter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
}

std::size_t index(Side side) {
  return side == Side::Client ? 0 : 1;
}

// The largest single allocation one call may make. The codec buffers at most a params body (up to
// the params cap) and hands it to the JSON parser, whose largest buffer is a small multiple of the
// text; everything else grows with the bytes of this call. An announced results length (up to
// 64 MiB) must never show up here.
std::size_t allocationBound(std::size_t fed) {
  return 32 * std::size_t{kLimits.max_params_json} + 4 * sizeof(ControlEvent) * (fed + 1) + 65536;
}

static_assert(32 * std::size_t{kLimits.max_params_json} + 65536 <
                  std::size_t{kLimits.max_results_json} / 4,
              "the allocation bound must stay well below the results cap to mean anything");

// Drives one codec through the operations and checks every answer.
class Run {
 public:
  enum class Split { Whole, Bytewise };
  // With capture the codec keeps the server's results JSON (the proxy does so to translate the
  // server's report); that must not change anything else it says.
  enum class Capture { Off, ServerResults };

  explicit Run(Capture capture = Capture::Off) : capture_(capture == Capture::ServerResults) {
    if (capture_) {
      codec_.captureServerResults();
    }
  }

  std::string play(const std::vector<Op>& ops, Split split) {
    bytewise_ = split == Split::Bytewise;
    std::string record;
    for (const Op& op : ops) {
      record += op.side == Side::Client ? "C" : "S";
      if (op.finish) {
        record += " EOF:";
        recordOutcome(call(op, {}), record);
        continue;
      }
      record += " " + std::to_string(op.bytes.size()) + ":";
      Outcome total;
      if (split == Split::Whole || op.bytes.empty()) {
        total = call(op, op.bytes);
      } else {
        for (std::size_t i = 0; i < op.bytes.size();) {
          // Once poisoned, the rest goes in one call: the whole-chunk runs test poisoned calls.
          const std::size_t size = poison_ ? op.bytes.size() - i : 1;
          Outcome piece = call(op, op.bytes.subspan(i, size));
          i += size;
          total.consumed += piece.consumed;
          total.events.insert(total.events.end(), piece.events.begin(), piece.events.end());
          if (piece.failure) {
            total.failure = std::move(piece.failure);
          }
        }
      }
      recordOutcome(total, record);
    }
    return record;
  }

 private:
  struct Outcome {
    std::size_t consumed = 0;
    std::vector<std::string> events;
    std::optional<std::string> failure;
  };

  static void recordOutcome(const Outcome& outcome, std::string& record) {
    record += " consumed " + std::to_string(outcome.consumed) + "\n";
    for (const std::string& event : outcome.events) {
      record += "  " + event + "\n";
    }
    if (outcome.failure) {
      record += "  FAILED: " + *outcome.failure + "\n";
    }
  }

  // Names the call in a failure message.
  struct Where {
    const Op& op;
    std::size_t size;

    std::string text() const {
      return std::string(op.side == Side::Client ? "client" : "server") +
             (op.finish ? " EOF" : " feed of " + std::to_string(size));
    }
  };

  Outcome call(const Op& op, std::span<const std::uint8_t> bytes) {
    FeedResult result;
    std::size_t largest = 0;
    {
      const AllocWatch watch;
      if (op.finish) {
        result = codec_.finish(op.side);
      } else {
        result = op.side == Side::Client ? codec_.feedClient(bytes) : codec_.feedServer(bytes);
      }
      largest = watch.largest();
    }
    const Where where{op, bytes.size()};
    FUZZ_CHECK(largest <= allocationBound(bytes.size()),
               where.text() + ": allocated " + std::to_string(largest) + " bytes at once");
    checkConsumed(op, bytes.size(), result, where);
    checkRefusal(op, bytes, result, where);
    checkEvents(op, result.events, where);
    trackBoundary(op, result);
    if (!poison_ && result.failure) {
      poison_ = render(*result.failure);
    }
    offset_[index(op.side)] += result.consumed;
    if (const auto start = codec_.serverResultsCaptureStart()) {
      // Held from the message's first byte, which has been consumed.
      FUZZ_CHECK(capture_ && *start < offset_[index(Side::Server)],
                 where.text() + ": capture from " + std::to_string(*start));
    }

    Outcome outcome;
    outcome.consumed = result.consumed;
    for (const ControlEvent& event : result.events) {
      outcome.events.push_back(render(event));
    }
    if (result.failure) {
      outcome.failure = render(*result.failure);
    }
    return outcome;
  }

  void checkConsumed(const Op& op,
                     std::size_t size,
                     const FeedResult& result,
                     const Where& where) const {
    FUZZ_CHECK(result.consumed <= size,
               where.text() + ": consumed " + std::to_string(result.consumed));
    if (poison_) {
      // After a failure every call repeats it, consumes nothing and reports nothing.
      FUZZ_CHECK(result.failure.has_value(), where.text() + ": no failure after " + *poison_);
      FUZZ_CHECK(
          render(*result.failure) == *poison_,
          where.text() + ": failure changed from " + *poison_ + " to " + render(*result.failure));
      FUZZ_CHECK(result.consumed == 0, where.text() + ": consumed bytes after a failure");
      FUZZ_CHECK(result.events.empty(), where.text() + ": events after a failure");
      return;
    }
    if (op.finish) {
      FUZZ_CHECK(result.consumed == 0, where.text() + ": end of stream consumed bytes");
    }
    if (!result.failure) {
      FUZZ_CHECK(
          op.finish || result.consumed == size,
          where.text() + ": consumed only " + std::to_string(result.consumed) + " without failure");
      return;
    }
    const CodecFailure& failure = *result.failure;
    FUZZ_CHECK(failure.side == op.side, where.text() + ": failure blames the other side");
    // `consumed` stops at the offending byte, which is where the failure points.
    FUZZ_CHECK(op.finish || result.consumed < size, where.text() + ": failure past the input");
    FUZZ_CHECK(failure.offset == offset_[index(op.side)] + result.consumed,
               where.text() + ": failure offset " + std::to_string(failure.offset) + ", expected " +
                   std::to_string(offset_[index(op.side)] + result.consumed));
    FUZZ_CHECK(!op.finish || failure.error == proto::CodecError::TruncatedMessage,
               where.text() + ": end of stream failed with " + render(failure));
    FUZZ_CHECK(proto::codecErrorName(failure.error) != "unknown", where.text() + ": unnamed error");
  }

  // One byte per call: a refused state or JSON must be one the protocol does not allow there.
  // The offending byte is the first of the call, between two messages of its side.
  void checkRefusal(const Op& op,
                    std::span<const std::uint8_t> bytes,
                    const FeedResult& result,
                    const Where& where) const {
    if (!bytewise_ || poison_ || op.finish || !result.failure) {
      return;
    }
    const proto::CodecError error = result.failure->error;
    if (error != proto::CodecError::UnknownState && error != proto::CodecError::OutOfOrder) {
      return;
    }
    const std::string what = where.text() + ": " + render(*result.failure);
    FUZZ_CHECK(result.consumed == 0 && !mid_message_[index(op.side)],
               what + " in the middle of a message");
    const std::uint8_t byte = bytes[0];
    const State state = proto::stateFromWire(byte);
    const auto due = model_.jsonDue(op.side);
    const std::uint32_t cap =
        due == OrderModel::Message::Params ? kLimits.max_params_json : kLimits.max_results_json;
    const bool stands_out = OrderModel::sends(op.side, state) && (std::uint64_t{byte} << 24) > cap;
    if (due && !stands_out) {
      // The first byte of the JSON's length: only the JSON's order can refuse it.
      FUZZ_CHECK(
          error == proto::CodecError::OutOfOrder && !model_.allows(op.side, OrderModel::key(*due)),
          what + " where a JSON may begin");
    } else if (!OrderModel::sends(op.side, state)) {
      FUZZ_CHECK(error == proto::CodecError::UnknownState, what + ": a byte this side never sends");
    } else {
      FUZZ_CHECK(
          error == proto::CodecError::OutOfOrder && !model_.allows(op.side, OrderModel::key(state)),
          what + ": a state this side may send now");
    }
  }

  // Whether the side is in the middle of a message after this call (one byte per call only).
  void trackBoundary(const Op& op, const FeedResult& result) {
    if (result.failure) {
      return;
    }
    bool& mid = mid_message_[index(op.side)];
    if (!result.events.empty()) {
      const auto* state = std::get_if<proto::StateReceived>(&result.events.back());
      mid = state != nullptr && state->state == State::ServerError;  // its payload follows
    } else if (result.consumed > 0) {
      mid = true;
    }
  }

  void checkEvents(const Op& op, const std::vector<ControlEvent>& events, const Where& where) {
    for (const ControlEvent& event : events) {
      // Built only for a failure message: this runs for every byte.
      const auto what = [&] {
        return where.text() + ": " + render(event);
      };
      const auto expectAllowed = [&](int message) {
        FUZZ_CHECK(model_.allows(op.side, message), what() + ": out of order");
        model_.record(op.side, message);
      };
      FUZZ_CHECK(!op.finish || op.side == Side::Server, what() + " at the client's end of stream");
      if (op.side == Side::Client && !cookie_seen_) {
        FUZZ_CHECK(std::holds_alternative<proto::CookieReceived>(event), what() + " before cookie");
      }
      if (const auto* cookie = std::get_if<proto::CookieReceived>(&event)) {
        FUZZ_CHECK(op.side == Side::Client && !cookie_seen_, what() + ": unexpected cookie");
        const std::string_view text = cookie->cookie.text();
        FUZZ_CHECK(text.size() == proto::kCookieSize - 1 &&
                       std::all_of(text.begin(), text.end(), isCookieCharacter),
                   what() + ": malformed cookie");
        cookie_seen_ = true;
        expectAllowed(OrderModel::key(OrderModel::Message::Cookie));
      } else if (const auto* state = std::get_if<proto::StateReceived>(&event)) {
        FUZZ_CHECK(state->from == op.side, what() + ": from the wrong side");
        FUZZ_CHECK(OrderModel::sends(op.side, state->state),
                   what() + ": not a state this side sends");
        FUZZ_CHECK(!server_error_pending_ || op.side == Side::Client,
                   what() + ": SERVER_ERROR payload skipped");
        expectAllowed(OrderModel::key(state->state));
        if (state->state == State::ServerError) {
          server_error_pending_ = true;
        }
      } else if (const auto* params = std::get_if<proto::ParamsReceived>(&event)) {
        FUZZ_CHECK(op.side == Side::Client, what() + ": params from the server");
        expectAllowed(OrderModel::key(OrderModel::Message::Params));
        FUZZ_CHECK(params->json_size >= 1 && params->json_size <= kLimits.max_params_json,
                   what() + ": params size");
        checkTestParams(params->params);
      } else if (const auto* rejected = std::get_if<proto::ParamsRejected>(&event)) {
        FUZZ_CHECK(op.side == Side::Client, what() + ": params from the server");
        expectAllowed(OrderModel::key(OrderModel::Message::Params));
        FUZZ_CHECK(!rejected->failure.detail.empty(), what() + ": rejected without a reason");
        FUZZ_CHECK(proto::paramsErrorName(rejected->failure.error) != "unknown",
                   what() + ": unnamed params error");
      } else if (const auto* results = std::get_if<proto::ResultsReceived>(&event)) {
        FUZZ_CHECK(results->from == op.side, what() + ": from the wrong side");
        expectAllowed(OrderModel::key(OrderModel::Message::Results));
        FUZZ_CHECK(results->json_size >= 1 && results->json_size <= kLimits.max_results_json,
                   what() + ": results size");
        const bool captured = capture_ && op.side == Side::Server;
        const bool fits = results->json_size <= kLimits.max_captured_results;
        FUZZ_CHECK(results->json.has_value() == (captured && fits), what() + ": captured or not");
        FUZZ_CHECK(results->too_large_to_capture == (captured && !fits),
                   what() + ": too large or not");
        FUZZ_CHECK(!results->json || results->json->size() == results->json_size,
                   what() + ": captured size");
      } else if (std::holds_alternative<proto::ServerErrorReceived>(event)) {
        FUZZ_CHECK(op.side == Side::Server && server_error_pending_,
                   what() + ": server error without SERVER_ERROR");
        server_error_pending_ = false;
      }
    }
  }

  bool capture_;
  bool bytewise_ = false;
  proto::ControlCodec codec_{kLimits};
  std::optional<std::string> poison_;
  std::array<std::uint64_t, 2> offset_{};
  bool cookie_seen_ = false;
  bool server_error_pending_ = false;
  OrderModel model_;
  std::array<bool, 2> mid_message_{};
};

// FUZZ_VERBOSE=1 in the environment prints each input's record (for reading a crash input).
bool verbose() {
  static const bool enabled = std::getenv("FUZZ_VERBOSE") != nullptr;
  return enabled;
}

}  // namespace
}  // namespace iperf3proxy::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using iperf3proxy::fuzz::Run;
  const auto ops = iperf3proxy::fuzz::decodeOps(std::span(data, size));
  const std::string first = Run().play(ops, Run::Split::Whole);
  if (iperf3proxy::fuzz::verbose()) {
    std::fputs(first.c_str(), stdout);
  }
  const std::string again = Run().play(ops, Run::Split::Whole);
  FUZZ_CHECK(again == first, "a fresh codec said something else:\n" + first + "---\n" + again);
  const std::string bytewise = Run().play(ops, Run::Split::Bytewise);
  FUZZ_CHECK(bytewise == first,
             "one byte per call said something else:\n" + first + "---\n" + bytewise);
  const std::string captured = Run(Run::Capture::ServerResults).play(ops, Run::Split::Bytewise);
  FUZZ_CHECK(captured == first,
             "capturing the server's results said something else:\n" + first + "---\n" + captured);
  return 0;
}
