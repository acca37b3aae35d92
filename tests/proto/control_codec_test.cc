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
#include "proto/codec_transcript.h"

namespace iperf3proxy::proto {
namespace {

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
  // The busy server writes 0xff and closes (docs/PROTOCOL.md §1.6).
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
  // Every client failure path sends IPERF_DONE (docs/PROTOCOL.md §1.7), even before its params.
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
                                      "byte 121 is not a client state; stage: connected"));
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

TEST(ControlCodecTest, UnknownStateBytes) {
  // RESULT_REQUEST is defined but never sent.
  expectSameUnderEverySplit(
      {fromClient(cookie()), fromServer(Bytes{0x09, 0x03})},
      failureAt({kCookieEvent, "server PARAM_EXCHANGE"}, CodecError::UnknownState, Side::Server, 1,
                "byte 3 is not a server state; stage: parameter exchange"));
  // PARAM_EXCHANGE is the server's.
  expectSameUnderEverySplit({fromClient(concat({cookie(), states({State::ParamExchange})}))},
                            failureAt({kCookieEvent}, CodecError::UnknownState, Side::Client, 37,
                                      "byte 9 is not a client state; stage: connected"));
  // 'a' where a state is due: a second cookie.
  expectSameUnderEverySplit(
      join({setup(kForwardParams), {fromClient(cookie())}}),
      failureAt(setupEvents("params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)"),
                CodecError::UnknownState, Side::Client, 37 + 4 + kForwardParams.size(),
                "byte 121 is not a client state; stage: stream creation"));
  // SERVER_ERROR is the server's.
  expectSameUnderEverySplit({fromClient(concat({cookie(), serverError(1, 2)}))},
                            failureAt({kCookieEvent}, CodecError::UnknownState, Side::Client, 37,
                                      "byte 254 is not a client state; stage: connected"));
}

TEST(ControlCodecTest, ConsumedStopsAtTheOffendingByte) {
  {
    ControlCodec codec;
    const Bytes bytes =
        concat({cookie(), states({State::ClientTerminate, State::IperfDone}), Bytes{0x09}});
    const FeedResult result = codec.feedClient(bytes);
    EXPECT_EQ(result.consumed, 39u);
    ASSERT_TRUE(result.failure);
    EXPECT_EQ(result.failure->offset, 39u);
    EXPECT_EQ(result.events.size(), 3u);  // the cookie and both states are still reported
  }
  {
    ControlCodec codec;
    EXPECT_EQ(codec.feedClient(cookie()).consumed, 37u);
    EXPECT_EQ(codec.feedServer(states({State::ParamExchange})).consumed, 1u);
    EXPECT_EQ(codec.feedClient(json(kForwardParams)).consumed, 4 + kForwardParams.size());
    EXPECT_EQ(codec.feedServer(states({State::CreateStreams, State::TestStart, State::TestRunning}))
                  .consumed,
              3u);
    const FeedResult result = codec.feedClient(Bytes{0x04, 0x0d, 0x04});
    EXPECT_EQ(result.consumed, 1u);
    ASSERT_TRUE(result.failure);
    EXPECT_EQ(result.failure->offset, 37 + 4 + kForwardParams.size() + 1);
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
  EXPECT_EQ(codecErrorName(CodecError::OutOfOrder), "message out of order");
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
  EXPECT_EQ(result.failure->error, CodecError::OutOfOrder);
  EXPECT_EQ(result.failure->detail, "PARAM_EXCHANGE before the client's cookie; stage: cookie");
  EXPECT_EQ(result.failure->side, Side::Server);
  EXPECT_EQ(result.consumed, 0U);
  EXPECT_TRUE(result.events.empty());
  const std::vector<std::uint8_t> client_terminate = {stateToWire(State::ClientTerminate)};
  EXPECT_TRUE(codec.feedClient(client_terminate).events.empty());
}

}  // namespace
}  // namespace iperf3proxy::proto
