#include "proto/control_codec.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "fuzz/alloc_watch.h"
#include "proto/capture_file.h"

namespace iperf3proxy::proto {
namespace {

// ---- Building transcripts ---------------------------------------------------------------------

using Bytes = std::vector<std::uint8_t>;

constexpr std::string_view kCookieText = "ymz3xjdmdsi2cnqgnh6gwl7t4ab5vbvkqc2e";

// A transcript is the control connection as the proxy sees it: chunks in the order they arrived,
// each from one side, and the end of stream from a side. The splitters below cut chunks further
// but never reorder them: the expectation for one direction is set by the other's bytes.
struct Step {
  Side side;
  Bytes bytes;
  bool finish = false;
};

using Transcript = std::vector<Step>;

Bytes text(std::string_view characters) {
  return Bytes(characters.begin(), characters.end());
}

Bytes cookie(std::string_view characters = kCookieText) {
  Bytes bytes = text(characters);
  bytes.push_back(0);
  return bytes;
}

Bytes states(std::initializer_list<State> list) {
  Bytes bytes;
  for (const State state : list) {
    bytes.push_back(stateToWire(state));
  }
  return bytes;
}

Bytes bigEndian(std::uint32_t value) {
  return {static_cast<std::uint8_t>(value >> 24), static_cast<std::uint8_t>(value >> 16),
          static_cast<std::uint8_t>(value >> 8), static_cast<std::uint8_t>(value)};
}

Bytes json(std::string_view body) {
  // Reserved up front: growing a 4-byte vector by insert() trips a GCC 12 -Warray-bounds false
  // positive at -O2.
  Bytes bytes;
  bytes.reserve(4 + body.size());
  const Bytes length = bigEndian(static_cast<std::uint32_t>(body.size()));
  bytes.insert(bytes.end(), length.begin(), length.end());
  bytes.insert(bytes.end(), body.begin(), body.end());
  return bytes;
}

Bytes serverError(std::uint32_t i_errno, std::optional<std::uint32_t> sys_errno) {
  Bytes bytes = states({State::ServerError});
  const Bytes first = bigEndian(i_errno);
  bytes.insert(bytes.end(), first.begin(), first.end());
  if (sys_errno) {
    const Bytes second = bigEndian(*sys_errno);
    bytes.insert(bytes.end(), second.begin(), second.end());
  }
  return bytes;
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes bytes;
  for (const Bytes& part : parts) {
    bytes.insert(bytes.end(), part.begin(), part.end());
  }
  return bytes;
}

Step fromClient(Bytes bytes) {
  return {Side::Client, std::move(bytes)};
}

Step fromServer(Bytes bytes) {
  return {Side::Server, std::move(bytes)};
}

Step endOf(Side side) {
  return {side, {}, true};
}

Transcript join(std::initializer_list<Transcript> parts) {
  Transcript steps;
  for (const Transcript& part : parts) {
    steps.insert(steps.end(), part.begin(), part.end());
  }
  return steps;
}

// ---- Recording what the codec says ------------------------------------------------------------

struct EventPrinter {
  std::string operator()(const CookieReceived& event) const {
    return "cookie " + std::string(event.cookie.text());
  }

  std::string operator()(const StateReceived& event) const {
    return std::string(sideName(event.from)) + " " + std::string(stateName(event.state));
  }

  std::string operator()(const ParamsReceived& event) const {
    const TestParams& p = event.params;
    std::ostringstream out;
    out << "params " << transportName(p.transport) << "/" << testModeName(p.mode) << " P"
        << p.streams_per_direction << " t" << p.duration_s << " O" << p.omit_s << " rb"
        << (p.role_byte ? 1 : 0) << " v" << p.client_version << " (" << event.json_size << " B)";
    return out.str();
  }

  std::string operator()(const ParamsRejected& event) const {
    return "params rejected: " + std::string(paramsErrorName(event.failure.error));
  }

  std::string operator()(const ResultsReceived& event) const {
    return std::string(sideName(event.from)) + " results (" + std::to_string(event.json_size) +
           " B)";
  }

  std::string operator()(const ServerErrorReceived& event) const {
    return "server error " + std::to_string(event.i_errno) + "/" +
           (event.sys_errno ? std::to_string(*event.sys_errno) : std::string("-"));
  }
};

std::string describe(const ControlEvent& event) {
  return std::visit(EventPrinter{}, event);
}

std::string describe(const std::optional<CodecFailure>& failure) {
  if (!failure) {
    return "no failure";
  }
  return std::string(codecErrorName(failure->error)) + " from " +
         std::string(sideName(failure->side)) + " at " + std::to_string(failure->offset) + " (" +
         failure->detail + ")";
}

struct Outcome {
  std::vector<std::string> events;
  std::optional<CodecFailure> failure;
};

::testing::AssertionResult sameOutcome(const Outcome& actual, const Outcome& expected) {
  if (actual.events != expected.events) {
    auto result = ::testing::AssertionFailure() << "events differ\n  actual:";
    for (const std::string& event : actual.events) {
      result << "\n    " << event;
    }
    result << "\n  expected:";
    for (const std::string& event : expected.events) {
      result << "\n    " << event;
    }
    return result;
  }
  if (describe(actual.failure) != describe(expected.failure)) {
    return ::testing::AssertionFailure() << "failure differs: actual " << describe(actual.failure)
                                         << ", expected " << describe(expected.failure);
  }
  return ::testing::AssertionSuccess();
}

// ---- Driving the codec ------------------------------------------------------------------------

// Piece sizes for chunk number `step` of `size` bytes; they must add up to `size`.
using Splitter = std::function<std::vector<std::size_t>(std::size_t step, std::size_t size)>;

std::vector<std::size_t> wholeChunk(std::size_t /*step*/, std::size_t size) {
  return {size};
}

std::vector<std::size_t> oneByteChunks(std::size_t /*step*/, std::size_t size) {
  return std::vector<std::size_t>(size, 1);
}

Splitter splitOneChunkAt(std::size_t split_step, std::size_t at) {
  return [split_step, at](std::size_t step, std::size_t size) -> std::vector<std::size_t> {
    if (step != split_step) {
      return {size};
    }
    return {at, size - at};
  };
}

Splitter randomChunks(std::uint32_t seed) {
  auto engine = std::make_shared<std::mt19937>(seed);
  return [engine](std::size_t /*step*/, std::size_t size) {
    std::vector<std::size_t> pieces;
    std::uniform_int_distribution<std::size_t> length(1, 24);
    for (std::size_t left = size; left > 0;) {
      const std::size_t piece = std::min(left, length(*engine));
      pieces.push_back(piece);
      left -= piece;
    }
    return pieces;
  };
}

FeedResult feed(ControlCodec& codec, Side side, std::span<const std::uint8_t> bytes) {
  return side == Side::Client ? codec.feedClient(bytes) : codec.feedServer(bytes);
}

// After a failure every call repeats it, consumes nothing and reports nothing.
void expectPoisoned(ControlCodec& codec, const CodecFailure& failure) {
  const Bytes probe = {0x10, 0x0e};
  for (const Side side : {Side::Client, Side::Server}) {
    for (const FeedResult& result : {feed(codec, side, probe), codec.finish(side)}) {
      EXPECT_EQ(result.consumed, 0u);
      EXPECT_TRUE(result.events.empty());
      EXPECT_EQ(describe(result.failure), describe(failure));
    }
  }
}

std::size_t sideIndex(Side side) {
  return side == Side::Client ? 0 : 1;
}

Outcome run(const Transcript& transcript, const Splitter& split, CodecLimits limits = {}) {
  ControlCodec codec(limits);
  Outcome outcome;
  std::uint64_t offsets[2] = {0, 0};
  const auto record = [&](const FeedResult& result) {
    for (const ControlEvent& event : result.events) {
      outcome.events.push_back(describe(event));
    }
  };
  for (std::size_t i = 0; i < transcript.size(); ++i) {
    const Step& step = transcript[i];
    if (step.finish) {
      const FeedResult result = codec.finish(step.side);
      EXPECT_EQ(result.consumed, 0u);
      record(result);
      if (result.failure) {
        EXPECT_EQ(result.failure->side, step.side);
        EXPECT_EQ(result.failure->offset, offsets[sideIndex(step.side)]);
        outcome.failure = result.failure;
        expectPoisoned(codec, *result.failure);
        return outcome;
      }
      continue;
    }
    std::size_t at = 0;
    for (const std::size_t piece : split(i, step.bytes.size())) {
      const FeedResult result = feed(codec, step.side, std::span(step.bytes).subspan(at, piece));
      record(result);
      std::uint64_t& offset = offsets[sideIndex(step.side)];
      if (result.failure) {
        // `consumed` stops right at the offending byte, which is where the failure points.
        EXPECT_LT(result.consumed, piece);
        EXPECT_EQ(result.failure->side, step.side);
        EXPECT_EQ(result.failure->offset, offset + result.consumed);
        outcome.failure = result.failure;
        expectPoisoned(codec, *result.failure);
        return outcome;
      }
      EXPECT_EQ(result.consumed, piece);
      offset += piece;
      at += piece;
    }
    EXPECT_EQ(at, step.bytes.size()) << "bad splitter";
  }
  return outcome;
}

// The outcome must not depend on how the bytes of each chunk were split into reads.
void expectSameUnderEverySplit(const Transcript& transcript,
                               const Outcome& expected,
                               CodecLimits limits = {}) {
  ASSERT_TRUE(sameOutcome(run(transcript, wholeChunk, limits), expected)) << "whole chunks";
  ASSERT_TRUE(sameOutcome(run(transcript, oneByteChunks, limits), expected)) << "1-byte chunks";
  for (std::size_t step = 0; step < transcript.size(); ++step) {
    for (std::size_t at = 1; at < transcript[step].bytes.size(); ++at) {
      ASSERT_TRUE(sameOutcome(run(transcript, splitOneChunkAt(step, at), limits), expected))
          << "chunk " << step << " split at " << at;
    }
  }
  for (std::uint32_t seed = 1; seed <= 32; ++seed) {
    ASSERT_TRUE(sameOutcome(run(transcript, randomChunks(seed), limits), expected))
        << "random chunks, seed " << seed;
  }
}

// ---- Sample messages --------------------------------------------------------------------------

// Params as iperf3 3.12 sends them (see test_params_test.cc and testdata/).
constexpr std::string_view kForwardParams =
    R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,"len":131072,)"
    R"("pacing_timer":1000,"client_version":"3.12"})";
constexpr std::string_view kReverseParams =
    R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,"reverse":true,)"
    R"("len":131072,"pacing_timer":1000,"client_version":"3.12"})";
constexpr std::string_view kBidirParams =
    R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":3,)"
    R"("bidirectional":true,"len":131072,"pacing_timer":1000,"client_version":"3.12"})";
constexpr std::string_view kUdpParams =
    R"({"udp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":8,"len":32768,)"
    R"("bandwidth":10000000,"pacing_timer":1000,"client_version":"3.12"})";

// Results as iperf3 <= 3.13 prints them, -1 as an unsigned 64-bit number.
constexpr std::string_view kClientResults =
    R"({"cpu_util_total":7.86,"cpu_util_user":0.29,"cpu_util_system":7.57,)"
    R"("sender_has_retransmits":1,"congestion_used":"cubic","streams":[{"id":1,)"
    R"("bytes":3350200320,"retransmits":2,"jitter":0,"errors":0,"packets":0,"start_time":0,)"
    R"("end_time":10.000139}]})";
constexpr std::string_view kServerResults =
    R"({"cpu_util_total":1.2,"cpu_util_user":0.01,"cpu_util_system":1.19,)"
    R"("sender_has_retransmits":18446744073709551615,"congestion_used":"cubic","streams":[{)"
    R"("id":1,"bytes":3350200320,"retransmits":18446744073709551615,"jitter":0,"errors":0,)"
    R"("packets":0,"start_time":0,"end_time":10.000139}]})";

const std::string kCookieEvent = "cookie " + std::string(kCookieText);

std::string resultsEvent(Side side, std::string_view body) {
  return std::string(sideName(side)) + " results (" + std::to_string(body.size()) + " B)";
}

// Up to the server's CREATE_STREAMS.
Transcript setup(std::string_view params) {
  return {fromClient(cookie()), fromServer(states({State::ParamExchange})),
          fromClient(json(params)), fromServer(states({State::CreateStreams}))};
}

// From TEST_START to the client's IPERF_DONE.
Transcript runAndExchange() {
  return {fromServer(states({State::TestStart, State::TestRunning})),
          fromClient(states({State::TestEnd})),
          fromServer(states({State::ExchangeResults})),
          fromClient(json(kClientResults)),
          fromServer(concat({json(kServerResults), states({State::DisplayResults})})),
          fromClient(states({State::IperfDone}))};
}

Transcript closeBoth() {
  return {endOf(Side::Client), endOf(Side::Server)};
}

std::vector<std::string> setupEvents(std::string params_event) {
  return {kCookieEvent, "server PARAM_EXCHANGE", std::move(params_event), "server CREATE_STREAMS"};
}

std::vector<std::string> runAndExchangeEvents() {
  return {"server TEST_START",
          "server TEST_RUNNING",
          "client TEST_END",
          "server EXCHANGE_RESULTS",
          resultsEvent(Side::Client, kClientResults),
          resultsEvent(Side::Server, kServerResults),
          "server DISPLAY_RESULTS",
          "client IPERF_DONE"};
}

std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---- Complete tests ---------------------------------------------------------------------------

TEST(ControlCodecTest, ForwardTest) {
  const Transcript transcript = join({setup(kForwardParams), runAndExchange(), closeBoth()});
  expectSameUnderEverySplit(
      transcript,
      {plus(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"), runAndExchangeEvents()),
       std::nullopt});
}

TEST(ControlCodecTest, ReverseTest) {
  const Transcript transcript = join({setup(kReverseParams), runAndExchange(), closeBoth()});
  expectSameUnderEverySplit(
      transcript,
      {plus(setupEvents("params tcp/reverse P1 t10 O0 rb0 v3.12 (139 B)"), runAndExchangeEvents()),
       std::nullopt});
}

TEST(ControlCodecTest, BidirectionalTest) {
  const Transcript transcript = join({setup(kBidirParams), runAndExchange(), closeBoth()});
  expectSameUnderEverySplit(
      transcript,
      {plus(setupEvents("params tcp/bidir P3 t10 O0 rb0 v3.12 (145 B)"), runAndExchangeEvents()),
       std::nullopt});
}

TEST(ControlCodecTest, UdpTestWithRoleByte) {
  std::string params(kUdpParams);
  params.insert(params.size() - 1, R"(,"role_byte":1)");
  const Transcript transcript = join({setup(params), runAndExchange(), closeBoth()});
  expectSameUnderEverySplit(transcript,
                            {plus(setupEvents("params udp/forward P8 t10 O0 rb1 v3.12 (" +
                                              std::to_string(params.size()) + " B)"),
                                  runAndExchangeEvents()),
                             std::nullopt});
}

TEST(ControlCodecTest, UnroutableParamsAreReportedNotFatal) {
  const Transcript transcript =
      join({setup(R"({"tcp":true,"reverse":1})"), runAndExchange(), closeBoth()});
  expectSameUnderEverySplit(
      transcript, {plus(setupEvents("params rejected: ambiguous value"), runAndExchangeEvents()),
                   std::nullopt});
  expectSameUnderEverySplit(join({setup("[1,2]"), closeBoth()}),
                            {setupEvents("params rejected: invalid JSON"), std::nullopt});
  expectSameUnderEverySplit(join({setup(R"({"parallel":129})"), closeBoth()}),
                            {setupEvents("params rejected: bad stream count"), std::nullopt});
}

TEST(ControlCodecTest, BytesAfterIperfDoneAreTolerated) {
  // 3.21+ may append a spurious SERVER_ERROR after the client's IPERF_DONE (protocol §1.7).
  const Bytes spurious = {0xfe, 0x00, 0x00, 0x00, 0xce, 0x00, 0x00, 0x00, 0x09};
  const Transcript transcript =
      join({setup(kForwardParams), runAndExchange(), {fromServer(spurious)}, closeBoth()});
  const Outcome expected = {
      plus(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"), runAndExchangeEvents()),
      std::nullopt};
  expectSameUnderEverySplit(transcript, expected);

  // Whatever else either side writes after IPERF_DONE is not interpreted either.
  const Transcript noisy = join({setup(kForwardParams),
                                 runAndExchange(),
                                 {fromServer(text("\xff\x03garbage")), fromClient(cookie()),
                                  fromClient(Bytes{0x09, 0x00}), fromServer(Bytes{0, 0, 0, 0})},
                                 closeBoth()});
  expectSameUnderEverySplit(noisy, expected);
}

// Control connections of real iperf3 3.12 tests, recorded with testdata/capture_relay.py and
// frozen: one `C <hex>` or `S <hex>` line per read, in the order the relay saw them.
struct Capture {
  std::string_view file;
  std::string_view params_event;
  std::size_t client_results;
  std::size_t server_results;
};

constexpr Capture kCaptures[] = {
    {"iperf3_12_default", "params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)", 284, 324},
    {"iperf3_12_reverse", "params tcp/reverse P1 t10 O0 rb0 v3.12 (139 B)", 325, 285},
    {"iperf3_12_parallel4", "params tcp/forward P4 t10 O0 rb0 v3.12 (124 B)", 626, 720},
    {"iperf3_12_bidir", "params tcp/bidir P1 t10 O0 rb0 v3.12 (145 B)", 416, 420},
    {"iperf3_12_bidir_p3", "params tcp/bidir P3 t10 O0 rb0 v3.12 (145 B)", 903, 904},
    {"iperf3_12_udp_10m", "params udp/forward P1 t10 O0 rb0 v3.12 (144 B)", 278, 325},
    {"iperf3_12_bytes_50m", "params tcp/forward P1 t0 O0 rb0 v3.12 (130 B)", 261, 304},
    {"iperf3_12_udp_bidir_p2", "params udp/bidir P2 t10 O0 rb0 v3.12 (164 B)", 712, 751},
    {"iperf3_12_title_extra", "params tcp/forward P1 t2 O1 rb0 v3.12 (156 B)", 281, 320},
    // --get-server-output; the server's results and DISPLAY_RESULTS came in one read.
    {"iperf3_12_server_output_json_p2", "params tcp/forward P2 t1 O0 rb0 v3.12 (145 B)", 377, 3156},
    {"iperf3_12_server_output_text_udp_p2", "params udp/forward P2 t1 O0 rb0 v3.12 (164 B)", 401,
     1356},
};

class RealTranscriptTest : public ::testing::TestWithParam<Capture> {};

TEST_P(RealTranscriptTest, SameEventsUnderEverySplit) {
  const Capture& capture = GetParam();
  const auto reads = testing::readCapture(capture.file);
  ASSERT_TRUE(reads.has_value()) << capture.file;
  Transcript transcript;
  std::string cookie_text;
  for (const testing::CapturedRead& read : *reads) {
    if (transcript.empty()) {
      ASSERT_EQ(read.bytes.size(), kCookieSize);
      cookie_text.assign(read.bytes.begin(), read.bytes.end() - 1);
    }
    transcript.push_back(read.side == Side::Client ? fromClient(read.bytes)
                                                   : fromServer(read.bytes));
  }
  transcript.push_back(endOf(Side::Client));
  transcript.push_back(endOf(Side::Server));
  const Outcome expected = {
      {"cookie " + cookie_text, "server PARAM_EXCHANGE", std::string(capture.params_event),
       "server CREATE_STREAMS", "server TEST_START", "server TEST_RUNNING", "client TEST_END",
       "server EXCHANGE_RESULTS",
       "client results (" + std::to_string(capture.client_results) + " B)",
       "server results (" + std::to_string(capture.server_results) + " B)",
       "server DISPLAY_RESULTS", "client IPERF_DONE"},
      std::nullopt};
  expectSameUnderEverySplit(transcript, expected);
}

INSTANTIATE_TEST_SUITE_P(Iperf312,
                         RealTranscriptTest,
                         ::testing::ValuesIn(kCaptures),
                         [](const ::testing::TestParamInfo<Capture>& test_info) {
                           return std::string(test_info.param.file);
                         });

// ---- Refusals and aborts ----------------------------------------------------------------------

TEST(ControlCodecTest, AccessDenied) {
  // The busy server writes 0xff and closes (protocol §1.6).
  const Transcript transcript = {fromClient(cookie()), fromServer(states({State::AccessDenied})),
                                 endOf(Side::Server), endOf(Side::Client)};
  expectSameUnderEverySplit(transcript, {{kCookieEvent, "server ACCESS_DENIED"}, std::nullopt});
}

TEST(ControlCodecTest, ServerErrorWithFullPayload) {
  const Transcript transcript = {fromClient(cookie()),
                                 fromServer(states({State::ParamExchange})),
                                 fromClient(json(R"({"tcp":true,"window":1073741824})")),
                                 fromServer(serverError(114, 0)),
                                 endOf(Side::Server),
                                 endOf(Side::Client)};
  expectSameUnderEverySplit(transcript, {{kCookieEvent, "server PARAM_EXCHANGE",
                                          "params tcp/forward P1 t10 O0 rb0 v (32 B)",
                                          "server SERVER_ERROR", "server error 114/0"},
                                         std::nullopt});
}

TEST(ControlCodecTest, ServerErrorIntegersAreSigned) {
  const Transcript transcript = {
      fromClient(cookie()), fromServer(serverError(0x80000000u, 0xffffffffu)),
      fromServer(serverError(0x7fffffffu, 104)), endOf(Side::Server), endOf(Side::Client)};
  expectSameUnderEverySplit(transcript,
                            {{kCookieEvent, "server SERVER_ERROR", "server error -2147483648/-1",
                              "server SERVER_ERROR", "server error 2147483647/104"},
                             std::nullopt});
}

TEST(ControlCodecTest, ServerErrorWithOnlyErrnoCodeThenClose) {
  // iperf3 <= 3.18 on an authentication failure: SERVER_ERROR, i_errno only, close.
  constexpr std::string_view kParams =
      R"({"tcp":true,"parallel":1,"authtoken":"QUJDREVG","client_version":"3.9"})";
  const Transcript transcript = {
      fromClient(cookie()),      fromServer(states({State::ParamExchange})),
      fromClient(json(kParams)), fromServer(serverError(155, std::nullopt)),
      endOf(Side::Server),       endOf(Side::Client)};
  expectSameUnderEverySplit(transcript, {{kCookieEvent, "server PARAM_EXCHANGE",
                                          "params tcp/forward P1 t10 O0 rb0 v3.9 (" +
                                              std::to_string(kParams.size()) + " B)",
                                          "server SERVER_ERROR", "server error 155/-"},
                                         std::nullopt});
}

TEST(ControlCodecTest, ServerErrorWhereResultsWereDue) {
  const Transcript transcript =
      join({setup(kForwardParams),
            {fromServer(states({State::TestStart, State::TestRunning})),
             fromClient(states({State::TestEnd})), fromServer(states({State::ExchangeResults})),
             fromClient(json(kClientResults)), fromServer(serverError(206, 9)), endOf(Side::Server),
             endOf(Side::Client)}});
  expectSameUnderEverySplit(
      transcript, {plus(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
                        {"server TEST_START", "server TEST_RUNNING", "client TEST_END",
                         "server EXCHANGE_RESULTS", resultsEvent(Side::Client, kClientResults),
                         "server SERVER_ERROR", "server error 206/9"}),
                   std::nullopt});
}

TEST(ControlCodecTest, ServerTerminateWhereResultsWereDue) {
  const Transcript transcript =
      join({setup(kForwardParams),
            {fromServer(states({State::TestStart, State::TestRunning})),
             fromClient(states({State::TestEnd})), fromServer(states({State::ExchangeResults})),
             fromClient(json(kClientResults)), fromServer(states({State::ServerTerminate})),
             endOf(Side::Server), endOf(Side::Client)}});
  expectSameUnderEverySplit(
      transcript, {plus(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
                        {"server TEST_START", "server TEST_RUNNING", "client TEST_END",
                         "server EXCHANGE_RESULTS", resultsEvent(Side::Client, kClientResults),
                         "server SERVER_TERMINATE"}),
                   std::nullopt});
}

TEST(ControlCodecTest, ClientAbortsWhereParamsWereDue) {
  // Every client failure path sends IPERF_DONE (protocol §1.7), even before its params.
  const Transcript transcript = {fromClient(cookie()), fromServer(states({State::ParamExchange})),
                                 fromClient(states({State::IperfDone})), endOf(Side::Client),
                                 endOf(Side::Server)};
  expectSameUnderEverySplit(
      transcript, {{kCookieEvent, "server PARAM_EXCHANGE", "client IPERF_DONE"}, std::nullopt});

  const Transcript terminated = {fromClient(cookie()), fromServer(states({State::ParamExchange})),
                                 fromClient(states({State::ClientTerminate})), endOf(Side::Client),
                                 endOf(Side::Server)};
  expectSameUnderEverySplit(
      terminated,
      {{kCookieEvent, "server PARAM_EXCHANGE", "client CLIENT_TERMINATE"}, std::nullopt});
}

TEST(ControlCodecTest, ClientAbortsWhereResultsWereDue) {
  const Transcript transcript = join(
      {setup(kForwardParams),
       {fromServer(states({State::TestStart, State::TestRunning})),
        fromClient(states({State::TestEnd})), fromServer(states({State::ExchangeResults})),
        fromClient(states({State::ClientTerminate})), endOf(Side::Client), endOf(Side::Server)}});
  expectSameUnderEverySplit(transcript,
                            {plus(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
                                  {"server TEST_START", "server TEST_RUNNING", "client TEST_END",
                                   "server EXCHANGE_RESULTS", "client CLIENT_TERMINATE"}),
                             std::nullopt});
}

TEST(ControlCodecTest, ClientAbortsDuringCreateStreamsAndRunning) {
  expectSameUnderEverySplit(
      join({setup(kForwardParams), {fromClient(states({State::IperfDone}))}, closeBoth()}),
      {plus(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"), {"client IPERF_DONE"}),
       std::nullopt});
  expectSameUnderEverySplit(join({setup(kForwardParams),
                                  {fromServer(states({State::TestStart, State::TestRunning})),
                                   fromClient(states({State::ClientTerminate})),
                                   fromServer(Bytes{}), fromClient(states({State::IperfDone}))},
                                  closeBoth()}),
                            {plus(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
                                  {"server TEST_START", "server TEST_RUNNING",
                                   "client CLIENT_TERMINATE", "client IPERF_DONE"}),
                             std::nullopt});
}

TEST(ControlCodecTest, ServerTerminatesMidTest) {
  expectSameUnderEverySplit(
      join({setup(kForwardParams),
            {fromServer(states({State::TestStart, State::TestRunning, State::ServerTerminate}))},
            closeBoth()}),
      {plus(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
            {"server TEST_START", "server TEST_RUNNING", "server SERVER_TERMINATE"}),
       std::nullopt});
}

TEST(ControlCodecTest, CloseWhereAJsonWasDueIsNotTruncation) {
  // The peer closed instead of answering; the session sees the close itself.
  expectSameUnderEverySplit({fromClient(cookie()), fromServer(states({State::ParamExchange})),
                             endOf(Side::Client), endOf(Side::Server)},
                            {{kCookieEvent, "server PARAM_EXCHANGE"}, std::nullopt});
}

// ---- Broken input -----------------------------------------------------------------------------

Outcome failureAt(std::vector<std::string> events,
                  CodecError error,
                  Side side,
                  std::uint64_t offset,
                  std::string detail) {
  return {std::move(events), CodecFailure{error, side, offset, std::move(detail)}};
}

TEST(ControlCodecTest, GarbageInsteadOfCookie) {
  expectSameUnderEverySplit({fromClient(text("GET / HTTP/1.1\r\nHost: example\r\n\r\n"))},
                            failureAt({}, CodecError::BadCookie, Side::Client, 0,
                                      "character outside the iperf3 cookie alphabet"));
  // TLS ClientHello.
  expectSameUnderEverySplit({fromClient(Bytes{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})},
                            failureAt({}, CodecError::BadCookie, Side::Client, 0,
                                      "character outside the iperf3 cookie alphabet"));
}

TEST(ControlCodecTest, CookieWithABadCharacterFailsAtThatByte) {
  for (const std::size_t position : {std::size_t{1}, std::size_t{20}, std::size_t{35}}) {
    SCOPED_TRACE(position);
    Bytes bytes = concat({cookie(), states({State::TestEnd})});
    bytes[position] = 'A';
    expectSameUnderEverySplit({fromClient(bytes)},
                              failureAt({}, CodecError::BadCookie, Side::Client, position,
                                        "character outside the iperf3 cookie alphabet"));
  }
  // A NUL too early is a bad character as well.
  Bytes early = cookie();
  early[30] = 0;
  expectSameUnderEverySplit({fromClient(early)},
                            failureAt({}, CodecError::BadCookie, Side::Client, 30,
                                      "character outside the iperf3 cookie alphabet"));
}

TEST(ControlCodecTest, CookieWithoutNul) {
  Bytes bytes = text(std::string(kCookieText) + "abcdefgh");  // 44 valid characters, no NUL
  expectSameUnderEverySplit({fromClient(bytes)}, failureAt({}, CodecError::BadCookie, Side::Client,
                                                           36, "no NUL terminator"));
}

TEST(ControlCodecTest, CookieCutShort) {
  const Bytes bytes = cookie();
  expectSameUnderEverySplit(
      {fromClient(Bytes(bytes.begin(), bytes.begin() + 20)), endOf(Side::Client)},
      failureAt({}, CodecError::TruncatedMessage, Side::Client, 20,
                "end of stream inside a message"));
}

TEST(ControlCodecTest, SecondCookieOnControlIsAnUnknownState) {
  expectSameUnderEverySplit({fromClient(concat({cookie(), cookie()}))},
                            failureAt({kCookieEvent}, CodecError::UnknownState, Side::Client, 37,
                                      "byte 121 is not a client state"));
}

TEST(ControlCodecTest, JsonLengthZero) {
  // Params: the failure points at the last byte of the length, offset 37 + 3.
  expectSameUnderEverySplit({fromClient(cookie()), fromServer(states({State::ParamExchange})),
                             fromClient(Bytes{0, 0, 0, 0, '{', '}'})},
                            failureAt({kCookieEvent, "server PARAM_EXCHANGE"},
                                      CodecError::JsonEmpty, Side::Client, 40, "JSON length 0"));
  // Results, from either side.
  const Transcript to_results =
      join({setup(kForwardParams),
            {fromServer(states({State::TestStart, State::TestRunning})),
             fromClient(states({State::TestEnd})), fromServer(states({State::ExchangeResults}))}});
  const std::vector<std::string> events_to_results = plus(
      setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
      {"server TEST_START", "server TEST_RUNNING", "client TEST_END", "server EXCHANGE_RESULTS"});
  const std::uint64_t client_results_at = 37 + 4 + kForwardParams.size() + 1;
  expectSameUnderEverySplit(join({to_results, {fromClient(Bytes{0, 0, 0, 0})}}),
                            failureAt(events_to_results, CodecError::JsonEmpty, Side::Client,
                                      client_results_at + 3, "JSON length 0"));
  expectSameUnderEverySplit(
      join({to_results, {fromClient(json(kClientResults)), fromServer(Bytes{0, 0, 0, 0, 0x0e})}}),
      failureAt(plus(events_to_results, {resultsEvent(Side::Client, kClientResults)}),
                CodecError::JsonEmpty, Side::Server, 5 + 3, "JSON length 0"));
}

TEST(ControlCodecTest, JsonTooLarge) {
  for (const std::uint32_t length : {0xffffffffu, 0x80000000u, kDefaultMaxParamsJson + 1}) {
    SCOPED_TRACE(length);
    expectSameUnderEverySplit({fromClient(cookie()), fromServer(states({State::ParamExchange})),
                               fromClient(bigEndian(length))},
                              failureAt({kCookieEvent, "server PARAM_EXCHANGE"},
                                        CodecError::JsonTooLarge, Side::Client, 40,
                                        "JSON length " + std::to_string(length) + " above cap " +
                                            std::to_string(kDefaultMaxParamsJson)));
  }
}

TEST(ControlCodecTest, JsonTooLargeIsRefusedWithoutAllocating) {
  for (const std::uint32_t length : {0xffffffffu, kDefaultMaxParamsJson + 1}) {
    SCOPED_TRACE(length);
    ControlCodec codec;
    ASSERT_FALSE(codec.feedClient(cookie()).failure);
    ASSERT_FALSE(codec.feedServer(states({State::ParamExchange})).failure);
    const Bytes announced = bigEndian(length);
    std::size_t largest = 0;
    FeedResult result;
    {
      fuzz::AllocWatch probe;
      result = codec.feedClient(announced);
      largest = probe.largest();
    }
    ASSERT_TRUE(result.failure);
    EXPECT_EQ(result.failure->error, CodecError::JsonTooLarge);
    EXPECT_LT(largest, 1024u);
  }
}

TEST(ControlCodecTest, ParamsExactlyAtTheCapAreAccepted) {
  expectSameUnderEverySplit(
      {fromClient(cookie()), fromServer(states({State::ParamExchange})),
       fromClient(concat({bigEndian(kDefaultMaxParamsJson), text("{}")})), endOf(Side::Client)},
      failureAt({kCookieEvent, "server PARAM_EXCHANGE"}, CodecError::TruncatedMessage, Side::Client,
                43, "end of stream inside a message"));
}

TEST(ControlCodecTest, ResultsTooLarge) {
  const Transcript to_results =
      join({setup(kForwardParams),
            {fromServer(states({State::TestStart, State::TestRunning})),
             fromClient(states({State::TestEnd})), fromServer(states({State::ExchangeResults}))}});
  const std::vector<std::string> events_to_results = plus(
      setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
      {"server TEST_START", "server TEST_RUNNING", "client TEST_END", "server EXCHANGE_RESULTS"});
  const std::uint64_t client_results_at = 37 + 4 + kForwardParams.size() + 1;
  const std::string cap = std::to_string(kDefaultMaxResultsJson);
  expectSameUnderEverySplit(
      join({to_results, {fromClient(bigEndian(0xffffffffu))}}),
      failureAt(events_to_results, CodecError::JsonTooLarge, Side::Client, client_results_at + 3,
                "JSON length 4294967295 above cap " + cap));
  expectSameUnderEverySplit(
      join({to_results, {fromClient(json(kClientResults)), fromServer(bigEndian(0x7fffffffu))}}),
      failureAt(plus(events_to_results, {resultsEvent(Side::Client, kClientResults)}),
                CodecError::JsonTooLarge, Side::Server, 5 + 3,
                "JSON length 2147483647 above cap " + cap));
  expectSameUnderEverySplit(
      join({to_results,
            {fromClient(json(kClientResults)), fromServer(bigEndian(kDefaultMaxResultsJson + 1))}}),
      failureAt(plus(events_to_results, {resultsEvent(Side::Client, kClientResults)}),
                CodecError::JsonTooLarge, Side::Server, 5 + 3,
                "JSON length " + std::to_string(kDefaultMaxResultsJson + 1) + " above cap " + cap));
}

TEST(ControlCodecTest, ResultsAreCountedNotBuffered) {
  constexpr std::uint32_t kSize = 1024 * 1024;
  ControlCodec codec;
  const auto feed_all = [&](Side side, const Bytes& bytes) {
    const FeedResult result = feed(codec, side, bytes);
    EXPECT_FALSE(result.failure) << describe(result.failure);
    EXPECT_EQ(result.consumed, bytes.size());
    return result;
  };
  feed_all(Side::Client, cookie());
  feed_all(Side::Server, states({State::ParamExchange}));
  feed_all(Side::Client, json(kForwardParams));
  feed_all(Side::Server, states({State::CreateStreams, State::TestStart, State::TestRunning}));
  feed_all(Side::Client, states({State::TestEnd}));
  feed_all(Side::Server, states({State::ExchangeResults}));
  feed_all(Side::Client, json(kClientResults));
  feed_all(Side::Server, bigEndian(kSize));
  const Bytes piece(64 * 1024, 'x');
  fuzz::AllocWatch probe;
  for (std::uint32_t fed = 0; fed + piece.size() < kSize;
       fed += static_cast<std::uint32_t>(piece.size())) {
    EXPECT_TRUE(feed_all(Side::Server, piece).events.empty());
  }
  const FeedResult complete = feed_all(Side::Server, piece);
  EXPECT_LT(probe.largest(), 4096u);
  ASSERT_EQ(complete.events.size(), 1u);
  EXPECT_EQ(describe(complete.events[0]), "server results (1048576 B)");
  const FeedResult last = feed_all(Side::Server, states({State::DisplayResults}));
  ASSERT_EQ(last.events.size(), 1u);
  EXPECT_EQ(describe(last.events[0]), "server DISPLAY_RESULTS");
}

// A forward test from the cookie to the server's EXCHANGE_RESULTS (5 server bytes).
void feedUpToExchangeResults(ControlCodec& codec) {
  feed(codec, Side::Client, cookie());
  feed(codec, Side::Server, states({State::ParamExchange}));
  feed(codec, Side::Client, json(kForwardParams));
  feed(codec, Side::Server, states({State::CreateStreams, State::TestStart, State::TestRunning}));
  feed(codec, Side::Client, states({State::TestEnd}));
  feed(codec, Side::Server, states({State::ExchangeResults}));
}

TEST(ControlCodecTest, CapturedServerResultsCarryTheirJsonAndWhereTheMessageBegan) {
  const Bytes message = concat({json(kServerResults), states({State::DisplayResults})});
  const std::uint64_t message_offset = 5;  // PARAM_EXCHANGE .. TEST_RUNNING, EXCHANGE_RESULTS
  for (std::size_t split = 0; split <= message.size(); ++split) {
    SCOPED_TRACE(split);
    ControlCodec codec;
    codec.captureServerResults();
    feedUpToExchangeResults(codec);
    EXPECT_FALSE(codec.serverResultsCaptureStart().has_value());
    feed(codec, Side::Client, json(kClientResults));

    std::vector<ControlEvent> events;
    const auto first = std::span(message).first(split);
    const auto second = std::span(message).subspan(split);
    for (int i = 0; i < 2; ++i) {
      const auto piece = i == 0 ? first : second;
      const FeedResult result = feed(codec, Side::Server, piece);
      ASSERT_FALSE(result.failure) << describe(result.failure);
      EXPECT_EQ(result.consumed, piece.size());
      events.insert(events.end(), result.events.begin(), result.events.end());
      if (i == 0) {
        // Held from the first byte of the message until its last.
        const bool inside = split > 0 && split < message.size() - 1;
        EXPECT_EQ(codec.serverResultsCaptureStart(),
                  inside ? std::optional<std::uint64_t>(message_offset) : std::nullopt);
      }
    }
    EXPECT_FALSE(codec.serverResultsCaptureStart().has_value());
    ASSERT_EQ(events.size(), 2u);
    const auto* results = std::get_if<ResultsReceived>(&events[0]);
    ASSERT_NE(results, nullptr);
    EXPECT_EQ(results->from, Side::Server);
    EXPECT_EQ(results->message_offset, message_offset);
    EXPECT_EQ(results->json, std::string(kServerResults));
    EXPECT_EQ(describe(events[1]), "server DISPLAY_RESULTS");
  }
}

TEST(ControlCodecTest, ResultsAboveTheCaptureCapStreamThroughUncaptured) {
  CodecLimits limits;
  limits.max_captured_results = static_cast<std::uint32_t>(kServerResults.size() - 1);
  ControlCodec codec(limits);
  codec.captureServerResults();
  feedUpToExchangeResults(codec);
  feed(codec, Side::Client, json(kClientResults));
  const Bytes message = json(kServerResults);
  feed(codec, Side::Server, std::span(message).first(4));
  // Past the length the hold is over: the body may be forwarded as it comes.
  EXPECT_FALSE(codec.serverResultsCaptureStart().has_value());
  const FeedResult result = feed(codec, Side::Server, std::span(message).subspan(4));
  ASSERT_EQ(result.events.size(), 1u);
  const auto* results = std::get_if<ResultsReceived>(&result.events[0]);
  ASSERT_NE(results, nullptr);
  EXPECT_FALSE(results->json.has_value());
  EXPECT_TRUE(results->too_large_to_capture);
}

TEST(ControlCodecTest, ClientResultsAreNeverCaptured) {
  ControlCodec codec;
  codec.captureServerResults();
  feedUpToExchangeResults(codec);
  const FeedResult result = feed(codec, Side::Client, json(kClientResults));
  ASSERT_EQ(result.events.size(), 1u);
  const auto* results = std::get_if<ResultsReceived>(&result.events[0]);
  ASSERT_NE(results, nullptr);
  EXPECT_FALSE(results->json.has_value());
  EXPECT_EQ(results->message_offset, 37u + 4 + kForwardParams.size() + 1);
}

TEST(ControlCodecTest, JsonCutShort) {
  const Bytes params = json(kForwardParams);
  const std::vector<std::string> events = {kCookieEvent, "server PARAM_EXCHANGE"};
  for (const std::size_t cut :
       {std::size_t{2}, std::size_t{4}, std::size_t{60}, params.size() - 1}) {
    SCOPED_TRACE(cut);
    expectSameUnderEverySplit(
        {fromClient(cookie()), fromServer(states({State::ParamExchange})),
         fromClient(Bytes(params.begin(), params.begin() + static_cast<std::ptrdiff_t>(cut))),
         endOf(Side::Client)},
        failureAt(events, CodecError::TruncatedMessage, Side::Client, 37 + cut,
                  "end of stream inside a message"));
  }
  // Results from the server, cut inside the body.
  expectSameUnderEverySplit(
      join({setup(kForwardParams),
            {fromServer(states({State::TestStart, State::TestRunning})),
             fromClient(states({State::TestEnd})), fromServer(states({State::ExchangeResults})),
             fromClient(json(kClientResults)), fromServer(Bytes{0, 0, 0, 9, '{', '}'}),
             endOf(Side::Client), endOf(Side::Server)}}),
      failureAt(plus(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
                     {"server TEST_START", "server TEST_RUNNING", "client TEST_END",
                      "server EXCHANGE_RESULTS", resultsEvent(Side::Client, kClientResults)}),
                CodecError::TruncatedMessage, Side::Server, 11, "end of stream inside a message"));
}

TEST(ControlCodecTest, ServerErrorCutShort) {
  const Bytes full = serverError(114, 0);
  for (std::size_t payload = 0; payload < kServerErrorPayloadSize; ++payload) {
    SCOPED_TRACE(payload);
    const Transcript transcript = {
        fromClient(cookie()),
        fromServer(Bytes(full.begin(), full.begin() + 1 + static_cast<std::ptrdiff_t>(payload))),
        endOf(Side::Server)};
    if (payload < 4) {
      expectSameUnderEverySplit(
          transcript, failureAt({kCookieEvent, "server SERVER_ERROR"}, CodecError::TruncatedMessage,
                                Side::Server, 1 + payload, "end of stream inside a message"));
    } else {
      expectSameUnderEverySplit(
          transcript, {{kCookieEvent, "server SERVER_ERROR", "server error 114/-"}, std::nullopt});
    }
  }
}

TEST(ControlCodecTest, FinishOnlyConcernsItsOwnSide) {
  // The server's results are half-way when the *client* closes: not a truncation.
  expectSameUnderEverySplit(
      join({setup(kForwardParams),
            {fromServer(states({State::TestStart, State::TestRunning})),
             fromClient(states({State::TestEnd})), fromServer(states({State::ExchangeResults})),
             fromClient(json(kClientResults)), fromServer(Bytes{0, 0, 0, 9, '{'}),
             endOf(Side::Client)}}),
      {plus(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
            {"server TEST_START", "server TEST_RUNNING", "client TEST_END",
             "server EXCHANGE_RESULTS", resultsEvent(Side::Client, kClientResults)}),
       std::nullopt});
}

// Which single byte each side may send where a state is due.
TEST(ControlCodecTest, StateBytesEachSideMaySend) {
  const Bytes client_states = {0x01, 0x04, 0x0c, 0x10};
  const Bytes server_states = {0x01, 0x02, 0x09, 0x0a, 0x0b, 0x0d, 0x0e, 0x10, 0xfe, 0xff};
  for (int value = 0; value < 256; ++value) {
    const auto byte = static_cast<std::uint8_t>(value);
    SCOPED_TRACE(value);
    for (const Side side : {Side::Client, Side::Server}) {
      const Bytes& allowed = side == Side::Client ? client_states : server_states;
      const bool ok = std::find(allowed.begin(), allowed.end(), byte) != allowed.end();
      const std::uint64_t offset = side == Side::Client ? 37 : 0;
      const Transcript transcript = {fromClient(cookie()), {side, Bytes{byte}}};
      const Outcome outcome = run(transcript, wholeChunk);
      if (ok) {
        EXPECT_FALSE(outcome.failure) << describe(outcome.failure);
        ASSERT_EQ(outcome.events.size(), 2u);
        EXPECT_EQ(outcome.events[1],
                  std::string(sideName(side)) + " " + std::string(stateName(stateFromWire(byte))));
      } else {
        ASSERT_TRUE(outcome.failure);
        EXPECT_EQ(outcome.failure->error, CodecError::UnknownState);
        EXPECT_EQ(outcome.failure->side, side);
        EXPECT_EQ(outcome.failure->offset, offset);
        EXPECT_EQ(outcome.events, std::vector<std::string>{kCookieEvent});
      }
    }
  }
}

TEST(ControlCodecTest, UnknownStateBytes) {
  // RESULT_REQUEST is defined but never sent.
  expectSameUnderEverySplit(
      {fromClient(cookie()), fromServer(Bytes{0x09, 0x03})},
      failureAt({kCookieEvent, "server PARAM_EXCHANGE"}, CodecError::UnknownState, Side::Server, 1,
                "byte 3 is not a server state"));
  // PARAM_EXCHANGE is the server's.
  expectSameUnderEverySplit({fromClient(concat({cookie(), states({State::ParamExchange})}))},
                            failureAt({kCookieEvent}, CodecError::UnknownState, Side::Client, 37,
                                      "byte 9 is not a client state"));
  // 'a' where a state is due: a second cookie.
  expectSameUnderEverySplit(
      join({setup(kForwardParams), {fromClient(cookie())}}),
      failureAt(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
                CodecError::UnknownState, Side::Client, 37 + 4 + kForwardParams.size(),
                "byte 121 is not a client state"));
  // SERVER_ERROR is the server's.
  expectSameUnderEverySplit({fromClient(concat({cookie(), serverError(1, 2)}))},
                            failureAt({kCookieEvent}, CodecError::UnknownState, Side::Client, 37,
                                      "byte 254 is not a client state"));
}

TEST(ControlCodecTest, ConsumedStopsAtTheOffendingByte) {
  {
    ControlCodec codec;
    const Bytes bytes = concat({cookie(), states({State::TestEnd, State::TestEnd}), Bytes{0x09}});
    const FeedResult result = codec.feedClient(bytes);
    EXPECT_EQ(result.consumed, 39u);
    ASSERT_TRUE(result.failure);
    EXPECT_EQ(result.failure->offset, 39u);
    EXPECT_EQ(result.events.size(), 3u);  // the cookie and two TEST_ENDs are still reported
  }
  {
    ControlCodec codec;
    EXPECT_EQ(codec.feedClient(cookie()).consumed, 37u);
    EXPECT_EQ(codec.feedServer(states({State::TestStart})).consumed, 1u);
    const FeedResult result = codec.feedClient(Bytes{0x04, 0x0d, 0x04});
    EXPECT_EQ(result.consumed, 1u);
    ASSERT_TRUE(result.failure);
    EXPECT_EQ(result.failure->offset, 38u);
    EXPECT_EQ(result.failure->side, Side::Client);
  }
  {
    ControlCodec codec;
    Bytes bytes = cookie();
    bytes[5] = '!';
    const FeedResult result = codec.feedClient(std::span(bytes).subspan(0, 3));
    EXPECT_EQ(result.consumed, 3u);
    EXPECT_FALSE(result.failure);
    const FeedResult bad = codec.feedClient(std::span(bytes).subspan(3));
    EXPECT_EQ(bad.consumed, 2u);
    ASSERT_TRUE(bad.failure);
    EXPECT_EQ(bad.failure->offset, 5u);
  }
}

TEST(ControlCodecTest, PoisonedAfterFailure) {
  ControlCodec codec;
  const FeedResult bad = codec.feedClient(text("HELLO"));
  ASSERT_TRUE(bad.failure);
  EXPECT_EQ(bad.consumed, 0u);
  expectPoisoned(codec, *bad.failure);
  // Even a perfectly valid continuation.
  const FeedResult later = codec.feedClient(cookie());
  EXPECT_EQ(later.consumed, 0u);
  EXPECT_TRUE(later.events.empty());
  EXPECT_EQ(describe(later.failure), describe(bad.failure));
}

TEST(ControlCodecTest, EmptyFeedDoesNothing) {
  ControlCodec codec;
  const FeedResult result = codec.feedClient({});
  EXPECT_EQ(result.consumed, 0u);
  EXPECT_TRUE(result.events.empty());
  EXPECT_FALSE(result.failure);
}

// ---- Caps -------------------------------------------------------------------------------------

TEST(ControlCodecTest, SmallCaps) {
  const CodecLimits limits{.max_params_json = 16, .max_results_json = 32};
  const std::string_view params_16 = R"({"parallel": 12})";
  ASSERT_EQ(params_16.size(), 16u);
  const std::string results_32 = R"({"x":")" + std::string(24, 'r') + R"("})";
  ASSERT_EQ(results_32.size(), 32u);

  const Transcript full = {
      fromClient(cookie()),
      fromServer(states({State::ParamExchange})),
      fromClient(json(params_16)),
      fromServer(states({State::CreateStreams, State::TestStart, State::TestRunning})),
      fromClient(states({State::TestEnd})),
      fromServer(states({State::ExchangeResults})),
      fromClient(json(results_32)),
      fromServer(concat({json(results_32), states({State::DisplayResults})})),
      fromClient(states({State::IperfDone})),
      endOf(Side::Client),
      endOf(Side::Server)};
  expectSameUnderEverySplit(
      full,
      {{kCookieEvent, "server PARAM_EXCHANGE", "params tcp/forward P12 t10 O0 rb0 v (16 B)",
        "server CREATE_STREAMS", "server TEST_START", "server TEST_RUNNING", "client TEST_END",
        "server EXCHANGE_RESULTS", "client results (32 B)", "server results (32 B)",
        "server DISPLAY_RESULTS", "client IPERF_DONE"},
       std::nullopt},
      limits);

  // One byte more, for each of the three messages.
  const std::string params_17 = R"({"parallel":  12})";
  expectSameUnderEverySplit(
      {fromClient(cookie()), fromServer(states({State::ParamExchange})),
       fromClient(json(params_17))},
      failureAt({kCookieEvent, "server PARAM_EXCHANGE"}, CodecError::JsonTooLarge, Side::Client, 40,
                "JSON length 17 above cap 16"),
      limits);
  const std::string results_33 = results_32 + " ";
  Transcript client_over(full.begin(), full.begin() + 6);
  client_over.push_back(fromClient(json(results_33)));
  const std::vector<std::string> events_to_results = {kCookieEvent,
                                                      "server PARAM_EXCHANGE",
                                                      "params tcp/forward P12 t10 O0 rb0 v (16 B)",
                                                      "server CREATE_STREAMS",
                                                      "server TEST_START",
                                                      "server TEST_RUNNING",
                                                      "client TEST_END",
                                                      "server EXCHANGE_RESULTS"};
  const std::uint64_t client_results_at = 37 + 4 + 16 + 1;
  expectSameUnderEverySplit(client_over,
                            failureAt(events_to_results, CodecError::JsonTooLarge, Side::Client,
                                      client_results_at + 3, "JSON length 33 above cap 32"),
                            limits);
  Transcript server_over(full.begin(), full.begin() + 7);
  server_over.push_back(fromServer(json(results_33)));
  expectSameUnderEverySplit(
      server_over,
      failureAt(plus(events_to_results, {"client results (32 B)"}), CodecError::JsonTooLarge,
                Side::Server, 5 + 3, "JSON length 33 above cap 32"),
      limits);

  // With small caps every state byte is still told apart from a length.
  Transcript server_gives_up(full.begin(), full.begin() + 7);
  server_gives_up.push_back(fromServer(serverError(206, 0)));
  expectSameUnderEverySplit(server_gives_up,
                            {plus(events_to_results, {"client results (32 B)",
                                                      "server SERVER_ERROR", "server error 206/0"}),
                             std::nullopt},
                            limits);
  expectSameUnderEverySplit(
      {fromClient(cookie()), fromServer(states({State::ParamExchange})),
       fromClient(states({State::IperfDone}))},
      {{kCookieEvent, "server PARAM_EXCHANGE", "client IPERF_DONE"}, std::nullopt}, limits);
}

TEST(ControlCodecTest, Names) {
  EXPECT_EQ(sideName(Side::Client), "client");
  EXPECT_EQ(sideName(Side::Server), "server");
  EXPECT_EQ(codecErrorName(CodecError::BadCookie), "bad cookie");
  EXPECT_EQ(codecErrorName(CodecError::UnknownState), "unexpected state byte");
  EXPECT_EQ(codecErrorName(CodecError::JsonEmpty), "empty JSON message");
  EXPECT_EQ(codecErrorName(CodecError::JsonTooLarge), "JSON message too large");
  EXPECT_EQ(codecErrorName(CodecError::TruncatedMessage), "message cut short");
}

}  // namespace
}  // namespace iperf3proxy::proto

namespace iperf3proxy::proto {
namespace {

// Found by the control codec fuzzer: a server state before the client's cookie used to set the
// client's expectation to params, so client bytes were decoded before any cookie.
TEST(ControlCodecTest, ServerStateBeforeTheClientsCookieIsAnError) {
  ControlCodec codec;
  const std::vector<std::uint8_t> param_exchange = {stateToWire(State::ParamExchange)};
  const FeedResult result = codec.feedServer(param_exchange);
  ASSERT_TRUE(result.failure);
  EXPECT_EQ(result.failure->error, CodecError::UnknownState);
  EXPECT_EQ(result.failure->side, Side::Server);
  EXPECT_EQ(result.consumed, 0U);
  EXPECT_TRUE(result.events.empty());
  const std::vector<std::uint8_t> client_terminate = {stateToWire(State::ClientTerminate)};
  EXPECT_TRUE(codec.feedClient(client_terminate).events.empty());
}

}  // namespace
}  // namespace iperf3proxy::proto
