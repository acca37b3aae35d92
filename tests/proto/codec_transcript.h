#pragma once

// Test support for the control codec's tests (control_codec_test.cc, control_order_test.cc):
// transcripts of a control connection, a driver that feeds them to a ControlCodec under every
// split of the bytes, and a printable record of what the codec said.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "proto/control_codec.h"

namespace iperf3proxy::proto {

// ---- Building transcripts ---------------------------------------------------------------------

using Bytes = std::vector<std::uint8_t>;

inline constexpr std::string_view kCookieText = "ymz3xjdmdsi2cnqgnh6gwl7t4ab5vbvkqc2e";

// A transcript is the control connection as the proxy sees it: chunks in the order they arrived,
// each from one side, and the end of stream from a side. The splitters below cut chunks further
// but never reorder them: the expectation for one direction is set by the other's bytes.
struct Step {
  Side side;
  Bytes bytes;
  bool finish = false;
};

using Transcript = std::vector<Step>;

Bytes text(std::string_view characters);
Bytes cookie(std::string_view characters = kCookieText);
Bytes states(std::initializer_list<State> list);
Bytes bigEndian(std::uint32_t value);
Bytes json(std::string_view body);  // a JSON message: its length, then the body
Bytes serverError(std::uint32_t i_errno, std::optional<std::uint32_t> sys_errno);
Bytes concat(std::initializer_list<Bytes> parts);
Step fromClient(Bytes bytes);
Step fromServer(Bytes bytes);
Step endOf(Side side);
Transcript join(std::initializer_list<Transcript> parts);

// ---- Recording what the codec says ------------------------------------------------------------

std::string describe(const ControlEvent& event);
std::string describe(const std::optional<CodecFailure>& failure);

struct Outcome {
  std::vector<std::string> events;
  std::optional<CodecFailure> failure;
};

::testing::AssertionResult sameOutcome(const Outcome& actual, const Outcome& expected);

Outcome failureAt(std::vector<std::string> events,
                  CodecError error,
                  Side side,
                  std::uint64_t offset,
                  std::string detail);

// ---- Driving the codec ------------------------------------------------------------------------

// Piece sizes for chunk number `step` of `size` bytes; they must add up to `size`.
using Splitter = std::function<std::vector<std::size_t>(std::size_t step, std::size_t size)>;

std::vector<std::size_t> wholeChunk(std::size_t step, std::size_t size);
std::vector<std::size_t> oneByteChunks(std::size_t step, std::size_t size);

FeedResult feed(ControlCodec& codec, Side side, std::span<const std::uint8_t> bytes);

// After a failure every call repeats it, consumes nothing and reports nothing.
void expectPoisoned(ControlCodec& codec, const CodecFailure& failure);

// Feeds the transcript, checking the codec's contract after every call (what it consumed, where
// a failure points, that a failure poisons it), and returns what it said.
Outcome run(const Transcript& transcript, const Splitter& split, CodecLimits limits = {});

// The outcome must not depend on how the bytes of each chunk were split into reads.
void expectSameUnderEverySplit(const Transcript& transcript,
                               const Outcome& expected,
                               CodecLimits limits = {});

// ---- Sample messages --------------------------------------------------------------------------

// Params as iperf3 3.12 sends them (see test_params_test.cc and testdata/).
inline constexpr std::string_view kForwardParams =
    R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,"len":131072,)"
    R"("pacing_timer":1000,"client_version":"3.12"})";
inline constexpr std::string_view kReverseParams =
    R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,"reverse":true,)"
    R"("len":131072,"pacing_timer":1000,"client_version":"3.12"})";
inline constexpr std::string_view kBidirParams =
    R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":3,)"
    R"("bidirectional":true,"len":131072,"pacing_timer":1000,"client_version":"3.12"})";
inline constexpr std::string_view kUdpParams =
    R"({"udp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":8,"len":32768,)"
    R"("bandwidth":10000000,"pacing_timer":1000,"client_version":"3.12"})";

// Results as iperf3 <= 3.13 prints them, -1 as an unsigned 64-bit number.
inline constexpr std::string_view kClientResults =
    R"({"cpu_util_total":7.86,"cpu_util_user":0.29,"cpu_util_system":7.57,)"
    R"("sender_has_retransmits":1,"congestion_used":"cubic","streams":[{"id":1,)"
    R"("bytes":3350200320,"retransmits":2,"jitter":0,"errors":0,"packets":0,"start_time":0,)"
    R"("end_time":10.000139}]})";
inline constexpr std::string_view kServerResults =
    R"({"cpu_util_total":1.2,"cpu_util_user":0.01,"cpu_util_system":1.19,)"
    R"("sender_has_retransmits":18446744073709551615,"congestion_used":"cubic","streams":[{)"
    R"("id":1,"bytes":3350200320,"retransmits":18446744073709551615,"jitter":0,"errors":0,)"
    R"("packets":0,"start_time":0,"end_time":10.000139}]})";

inline const std::string kCookieEvent = "cookie " + std::string(kCookieText);
// "client results (284 B)"
std::string resultsEvent(Side side, std::string_view body);

// Up to the server's CREATE_STREAMS.
Transcript setup(std::string_view params);
// From TEST_START to the client's IPERF_DONE.
Transcript runAndExchange();
Transcript closeBoth();
std::vector<std::string> setupEvents(std::string params_event);
std::vector<std::string> runAndExchangeEvents();
std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b);

// The params event of kForwardParams.
inline constexpr std::string_view kForwardParamsEvent =
    "params tcp/forward P1 t10 O0 rb0 v3.12 (124 B)";

}  // namespace iperf3proxy::proto
