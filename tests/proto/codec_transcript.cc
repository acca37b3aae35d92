#include "proto/codec_transcript.h"

#include <algorithm>
#include <memory>
#include <random>
#include <sstream>
#include <utility>
#include <variant>

namespace iperf3proxy::proto {

// ---- Building transcripts ---------------------------------------------------------------------

Bytes text(std::string_view characters) {
  return Bytes(characters.begin(), characters.end());
}

Bytes cookie(std::string_view characters) {
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

namespace {

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
}  // namespace

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

std::vector<std::size_t> wholeChunk(std::size_t /*step*/, std::size_t size) {
  return {size};
}

std::vector<std::size_t> oneByteChunks(std::size_t /*step*/, std::size_t size) {
  return std::vector<std::size_t>(size, 1);
}

namespace {

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
}  // namespace

FeedResult feed(ControlCodec& codec, Side side, std::span<const std::uint8_t> bytes) {
  return side == Side::Client ? codec.feedClient(bytes) : codec.feedServer(bytes);
}

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

namespace {

std::size_t sideIndex(Side side) {
  return side == Side::Client ? 0 : 1;
}
}  // namespace

Outcome run(const Transcript& transcript, const Splitter& split, CodecLimits limits) {
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
                               CodecLimits limits) {
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

Outcome failureAt(std::vector<std::string> events,
                  CodecError error,
                  Side side,
                  std::uint64_t offset,
                  std::string detail) {
  return {std::move(events), CodecFailure{error, side, offset, std::move(detail)}};
}

}  // namespace iperf3proxy::proto
