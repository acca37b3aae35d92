// The protocol's order, as the codec enforces it (issue 9): every legal sequence of iperf3 3.7
// to master is accepted under every split of its bytes, and anything out of order fails at its
// first byte, naming the state and the stage.

#include "proto/control_order.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "fuzz/alloc_watch.h"
#include "proto/codec_transcript.h"
#include "proto/control_codec.h"

namespace iperf3proxy::proto {
namespace {

// ---- The stages of a forward test -------------------------------------------------------------

// A forward test up to one point, what the codec said so far, and how many bytes each side
// sent: the offset of the next byte from that side.
struct Stage {
  std::string name;
  Transcript transcript;
  std::vector<std::string> events;
  std::uint64_t client_bytes = 0;
  std::uint64_t server_bytes = 0;

  Stage then(const Step& step, std::vector<std::string> more, std::string next_name) const {
    Stage next = *this;
    next.name = std::move(next_name);
    next.transcript.push_back(step);
    next.events = plus(events, more);
    (step.side == Side::Client ? next.client_bytes : next.server_bytes) += step.bytes.size();
    return next;
  }

  std::uint64_t offset(Side side) const {
    return side == Side::Client ? client_bytes : server_bytes;
  }
};

// Every stage of a forward test, in order; each name is what the codec calls that stage.
std::vector<Stage> forwardStages() {
  std::vector<Stage> stages;
  stages.push_back(Stage{"connected", {fromClient(cookie())}, {kCookieEvent}, 37, 0});
  const auto add = [&stages](const Step& step, std::vector<std::string> events, std::string name) {
    stages.push_back(stages.back().then(step, std::move(events), std::move(name)));
  };
  add(fromServer(states({State::ParamExchange})), {"server PARAM_EXCHANGE"}, "parameter exchange");
  add(fromClient(json(kForwardParams)), {std::string(kForwardParamsEvent)}, "parameters sent");
  add(fromServer(states({State::CreateStreams})), {"server CREATE_STREAMS"}, "stream creation");
  add(fromServer(states({State::TestStart})), {"server TEST_START"}, "test start");
  add(fromServer(states({State::TestRunning})), {"server TEST_RUNNING"}, "test running");
  add(fromClient(states({State::TestEnd})), {"client TEST_END"}, "test end");
  add(fromServer(states({State::ExchangeResults})), {"server EXCHANGE_RESULTS"},
      "results exchange");
  add(fromClient(json(kClientResults)), {resultsEvent(Side::Client, kClientResults)},
      "results exchange");
  add(fromServer(json(kServerResults)), {resultsEvent(Side::Server, kServerResults)},
      "results exchange");
  add(fromServer(states({State::DisplayResults})), {"server DISPLAY_RESULTS"}, "results shown");
  return stages;
}

Stage stageNamed(std::string_view name) {
  for (const Stage& stage : forwardStages()) {
    if (stage.name == name) {
      return stage;  // the first one of that name
    }
  }
  ADD_FAILURE() << "no stage " << name;
  return {};
}

// The stage after the client's IPERF_DONE at the end of a complete test.
Stage completedTest() {
  return forwardStages().back().then(fromClient(states({State::IperfDone})), {"client IPERF_DONE"},
                                     "results shown");
}

// The stage goes on with `steps`, all accepted, and both sides close.
void expectAccepted(const Stage& stage,
                    const std::vector<Step>& steps,
                    const std::vector<std::string>& events) {
  SCOPED_TRACE("after stage " + stage.name);
  Transcript transcript = stage.transcript;
  transcript.insert(transcript.end(), steps.begin(), steps.end());
  transcript.push_back(endOf(Side::Client));
  transcript.push_back(endOf(Side::Server));
  expectSameUnderEverySplit(transcript, {plus(stage.events, events), std::nullopt});
}

// The stage goes on with `step`, whose first byte fails as `error` with `detail` (the stage
// name is appended).
void expectRefused(const Stage& stage,
                   const Step& step,
                   CodecError error,
                   const std::string& detail,
                   std::optional<std::string> stage_name = std::nullopt) {
  SCOPED_TRACE("after stage " + stage.name);
  Transcript transcript = stage.transcript;
  transcript.push_back(step);
  expectSameUnderEverySplit(transcript,
                            failureAt(stage.events, error, step.side, stage.offset(step.side),
                                      detail + "; stage: " + stage_name.value_or(stage.name)));
}

// ---- Which byte each side may send, stage by stage --------------------------------------------

struct Allowed {
  std::string_view stage;
  Bytes client;  // empty: a JSON is due from the client, so other bytes are its length
  Bytes server;  // empty: the server's results are due
};

// Written out from the protocol (control_order.h), not from the code.
const Allowed kAllowed[] = {
    {"connected", {0x0c, 0x10}, {0x09, 0x0b, 0xfe, 0xff}},
    {"parameter exchange", {}, {0x0b, 0xfe}},
    {"parameters sent", {0x0c, 0x10}, {0x0a, 0x0b, 0xfe}},
    {"stream creation", {0x0c, 0x10}, {0x01, 0x0b, 0xfe}},
    {"test start", {0x0c, 0x10}, {0x02, 0x0b, 0xfe}},
    {"test running", {0x04, 0x0c, 0x10}, {0x0b, 0xfe}},
    {"test end", {0x0c, 0x10}, {0x0d, 0x0b, 0xfe}},
    {"results shown", {0x0c, 0x10}, {0x0b, 0xfe}},
};

// States some client / some server sends at all; any other byte is not a message.
const Bytes kClientStates = {0x04, 0x0c, 0x10};
const Bytes kServerStates = {0x01, 0x02, 0x09, 0x0a, 0x0b, 0x0d, 0x0e, 0xfe, 0xff};

bool contains(const Bytes& bytes, std::uint8_t byte) {
  return std::find(bytes.begin(), bytes.end(), byte) != bytes.end();
}

TEST(ControlOrderTest, EveryByteAtEveryStage) {
  for (const Allowed& allowed : kAllowed) {
    const Stage stage = stageNamed(allowed.stage);
    for (const Side side : {Side::Client, Side::Server}) {
      const Bytes& ok = side == Side::Client ? allowed.client : allowed.server;
      if (ok.empty()) {
        continue;
      }
      for (int value = 0; value < 256; ++value) {
        const auto byte = static_cast<std::uint8_t>(value);
        SCOPED_TRACE(std::string(allowed.stage) + ", " + std::string(sideName(side)) + " byte " +
                     std::to_string(value));
        Transcript transcript = stage.transcript;
        transcript.push_back({side, Bytes{byte}});
        const Outcome outcome = run(transcript, wholeChunk);
        if (contains(ok, byte)) {
          EXPECT_FALSE(outcome.failure) << describe(outcome.failure);
          EXPECT_EQ(outcome.events,
                    plus(stage.events, {std::string(sideName(side)) + " " +
                                        std::string(stateName(stateFromWire(byte)))}));
          continue;
        }
        ASSERT_TRUE(outcome.failure);
        const bool a_state = contains(side == Side::Client ? kClientStates : kServerStates, byte);
        EXPECT_EQ(outcome.failure->error,
                  a_state ? CodecError::OutOfOrder : CodecError::UnknownState);
        EXPECT_EQ(outcome.failure->side, side);
        EXPECT_EQ(outcome.failure->offset, stage.offset(side));
        EXPECT_EQ(outcome.events, stage.events);
      }
    }
  }
}

TEST(ControlOrderTest, WhoSendsWhat) {
  for (int value = 0; value < 256; ++value) {
    const auto byte = static_cast<std::uint8_t>(value);
    EXPECT_EQ(ControlOrder::sends(Side::Client, stateFromWire(byte)), contains(kClientStates, byte))
        << value;
    EXPECT_EQ(ControlOrder::sends(Side::Server, stateFromWire(byte)), contains(kServerStates, byte))
        << value;
  }
}

// ---- Legal sequences --------------------------------------------------------------------------

// IPERF_DONE is every client's abort (iperf_client_end on each failure path), CLIENT_TERMINATE
// its answer to a signal: either may come at any point, once, and the other may follow.
TEST(ControlOrderTest, ClientMayAbortAtEveryStage) {
  for (const Stage& stage : forwardStages()) {
    expectAccepted(stage, {fromClient(states({State::IperfDone}))}, {"client IPERF_DONE"});
    expectAccepted(stage, {fromClient(states({State::ClientTerminate}))},
                   {"client CLIENT_TERMINATE"});
    expectAccepted(stage, {fromClient(states({State::ClientTerminate, State::IperfDone}))},
                   {"client CLIENT_TERMINATE", "client IPERF_DONE"});
    expectAccepted(stage, {fromClient(states({State::IperfDone, State::ClientTerminate}))},
                   {"client IPERF_DONE", "client CLIENT_TERMINATE"});
  }
}

// SERVER_TERMINATE (a signal) and SERVER_ERROR may come at any point; 3.21+ may send a second
// SERVER_ERROR from their cleanup. The client answers with IPERF_DONE (3.7-3.9 always, later
// versions after SERVER_TERMINATE).
TEST(ControlOrderTest, ServerMayEndAtEveryStage) {
  for (const Stage& stage : forwardStages()) {
    expectAccepted(
        stage,
        {fromServer(states({State::ServerTerminate})), fromClient(states({State::IperfDone}))},
        {"server SERVER_TERMINATE", "client IPERF_DONE"});
    expectAccepted(
        stage, {fromServer(concat({serverError(206, 9), serverError(206, 9)}))},
        {"server SERVER_ERROR", "server error 206/9", "server SERVER_ERROR", "server error 206/9"});
    expectAccepted(stage,
                   {fromServer(concat({serverError(118, 0), states({State::ServerTerminate})})),
                    fromClient(states({State::IperfDone}))},
                   {"server SERVER_ERROR", "server error 118/0", "server SERVER_TERMINATE",
                    "client IPERF_DONE"});
  }
}

TEST(ControlOrderTest, AccessDeniedInPlaceOfParamExchange) {
  // The busy server writes 0xff and closes (docs/PROTOCOL.md §1.6); 3.7-3.9 clients still say
  // IPERF_DONE.
  expectAccepted(
      stageNamed("connected"),
      {fromServer(states({State::AccessDenied})), fromClient(states({State::IperfDone}))},
      {"server ACCESS_DENIED", "client IPERF_DONE"});
}

TEST(ControlOrderTest, SpuriousServerErrorAfterIperfDone) {
  // 3.21+ may append a SERVER_ERROR after a test that went well (docs/PROTOCOL.md §1.7); the 3.21+
  // client half-closes after IPERF_DONE and drains.
  const Bytes spurious = {0xfe, 0x00, 0x00, 0x00, 0xce, 0x00, 0x00, 0x00, 0x09};
  expectAccepted(completedTest(), {endOf(Side::Client), fromServer(spurious)},
                 {"server SERVER_ERROR", "server error 206/9"});
}

// Both directions run at once: a message may cross one from the peer.
TEST(ControlOrderTest, MessagesMayCross) {
  // The client gives up while the server, with every stream there, starts the test.
  expectAccepted(stageNamed("stream creation"),
                 {fromClient(states({State::IperfDone})),
                  fromServer(states({State::TestStart, State::TestRunning}))},
                 {"client IPERF_DONE", "server TEST_START", "server TEST_RUNNING"});
  // The server is stopped while the client ends the test.
  expectAccepted(stageNamed("test running"),
                 {fromServer(states({State::ServerTerminate})),
                  fromClient(states({State::TestEnd})), fromClient(states({State::IperfDone}))},
                 {"server SERVER_TERMINATE", "client TEST_END", "client IPERF_DONE"});
  // A 3.15+ server gave up waiting for the parameters while they were on their way.
  expectAccepted(stageNamed("parameter exchange"),
                 {fromServer(serverError(114, 110)), fromClient(json(kForwardParams))},
                 {"server SERVER_ERROR", "server error 114/110", std::string(kForwardParamsEvent)});
  // The server failed while the client's results were on their way.
  expectAccepted(
      stageNamed("results exchange"),
      {fromServer(serverError(206, 9)), fromClient(json(kClientResults))},
      {"server SERVER_ERROR", "server error 206/9", resultsEvent(Side::Client, kClientResults)});
}

// ---- Refusals: the client ---------------------------------------------------------------------

TEST(ControlOrderTest, TestEndOnlyOnceAndOnlyWhileRunning) {
  expectRefused(stageNamed("test end"), fromClient(states({State::TestEnd})),
                CodecError::OutOfOrder, "TEST_END again");
  for (const std::string_view name :
       {"connected", "parameter exchange", "parameters sent", "stream creation", "test start"}) {
    expectRefused(stageNamed(name), fromClient(states({State::TestEnd})), CodecError::OutOfOrder,
                  "TEST_END before TEST_RUNNING");
  }
  expectRefused(stageNamed("test running")
                    .then(fromClient(states({State::IperfDone})), {"client IPERF_DONE"}, "aborted"),
                fromClient(states({State::TestEnd})), CodecError::OutOfOrder,
                "TEST_END after IPERF_DONE", "test running, after the client's IPERF_DONE");
  expectRefused(stageNamed("test running")
                    .then(fromClient(states({State::ClientTerminate})), {"client CLIENT_TERMINATE"},
                          "terminated"),
                fromClient(states({State::TestEnd})), CodecError::OutOfOrder,
                "TEST_END after CLIENT_TERMINATE",
                "test running, after the client's CLIENT_TERMINATE");
}

// The flood of issue 9: a client that floods TEST_END once the test runs. The first one is
// the end of the test, the second ends the conversation: nothing past it is consumed.
TEST(ControlOrderTest, TestEndFloodStopsAtTheSecond) {
  expectRefused(stageNamed("test end"), fromClient(Bytes(64, 0x04)), CodecError::OutOfOrder,
                "TEST_END again");

  ControlCodec codec;
  for (const Step& step : stageNamed("test running").transcript) {
    ASSERT_FALSE(feed(codec, step.side, step.bytes).failure);
  }
  const Bytes flood(1 << 20, 0x04);
  FeedResult result;
  std::size_t largest = 0;
  {
    const fuzz::AllocWatch watch;
    result = codec.feedClient(flood);
    largest = watch.largest();
  }
  EXPECT_EQ(result.consumed, 1u);
  ASSERT_EQ(result.events.size(), 1u);
  EXPECT_EQ(describe(result.events[0]), "client TEST_END");
  ASSERT_TRUE(result.failure);
  EXPECT_EQ(result.failure->error, CodecError::OutOfOrder);
  EXPECT_LT(largest, 4096u);
}

TEST(ControlOrderTest, ClientNeverSendsTestStart) {
  // The server would take it as a no-op, but no client 3.7..master sends it.
  for (const std::string_view name : {"connected", "stream creation", "test running"}) {
    expectRefused(stageNamed(name), fromClient(states({State::TestStart})),
                  CodecError::UnknownState, "byte 1 is not a client state");
  }
}

TEST(ControlOrderTest, ParamsOnlyOnceAfterParamExchange) {
  expectRefused(stageNamed("connected"), fromClient(json(kForwardParams)), CodecError::UnknownState,
                "byte 0 is not a client state");
  expectRefused(stageNamed("parameters sent"), fromClient(json(kForwardParams)),
                CodecError::UnknownState, "byte 0 is not a client state");
  expectRefused(stageNamed("stream creation"), fromClient(json(kForwardParams)),
                CodecError::UnknownState, "byte 0 is not a client state");
}

TEST(ControlOrderTest, ResultsOnlyAfterExchangeResults) {
  for (const std::string_view name : {"test running", "test end"}) {
    expectRefused(stageNamed(name), fromClient(json(kClientResults)), CodecError::UnknownState,
                  "byte 0 is not a client state");
  }
  // Not twice either.
  expectRefused(stageNamed("results shown"), fromClient(json(kClientResults)),
                CodecError::UnknownState, "byte 0 is not a client state");
}

TEST(ControlOrderTest, NothingAfterIperfDoneButClientTerminate) {
  const Stage done = completedTest();
  expectRefused(done, fromClient(states({State::IperfDone})), CodecError::OutOfOrder,
                "IPERF_DONE again", "results shown, after the client's IPERF_DONE");
  // The flood after the end stops at its first byte.
  expectRefused(done, fromClient(Bytes(64, 0x10)), CodecError::OutOfOrder, "IPERF_DONE again",
                "results shown, after the client's IPERF_DONE");
  expectRefused(done, fromClient(states({State::TestEnd})), CodecError::OutOfOrder,
                "TEST_END again", "results shown, after the client's IPERF_DONE");
  expectRefused(done, fromClient(cookie()), CodecError::UnknownState,
                "byte 121 is not a client state", "results shown, after the client's IPERF_DONE");
  expectRefused(done, fromClient(Bytes{0x09, 0x00}), CodecError::UnknownState,
                "byte 9 is not a client state", "results shown, after the client's IPERF_DONE");
  expectAccepted(done, {fromClient(states({State::ClientTerminate}))}, {"client CLIENT_TERMINATE"});
}

TEST(ControlOrderTest, ClientTerminateOnlyOnce) {
  const Stage terminated = stageNamed("test running")
                               .then(fromClient(states({State::ClientTerminate})),
                                     {"client CLIENT_TERMINATE"}, "terminated");
  expectRefused(terminated, fromClient(states({State::ClientTerminate})), CodecError::OutOfOrder,
                "CLIENT_TERMINATE again", "test running, after the client's CLIENT_TERMINATE");
}

// ---- Refusals: the server ---------------------------------------------------------------------

TEST(ControlOrderTest, ServerFollowsItsSequence) {
  expectRefused(stageNamed("parameter exchange"), fromServer(states({State::ParamExchange})),
                CodecError::OutOfOrder, "PARAM_EXCHANGE again");
  expectRefused(stageNamed("parameter exchange"), fromServer(states({State::CreateStreams})),
                CodecError::OutOfOrder, "CREATE_STREAMS before the client's parameters");
  expectRefused(stageNamed("connected"), fromServer(states({State::CreateStreams})),
                CodecError::OutOfOrder, "CREATE_STREAMS before PARAM_EXCHANGE");
  expectRefused(stageNamed("parameters sent"), fromServer(states({State::TestStart})),
                CodecError::OutOfOrder, "TEST_START before CREATE_STREAMS");
  expectRefused(stageNamed("stream creation"), fromServer(states({State::TestRunning})),
                CodecError::OutOfOrder, "TEST_RUNNING before TEST_START");
  expectRefused(stageNamed("test start"), fromServer(states({State::TestStart})),
                CodecError::OutOfOrder, "TEST_START again");
  expectRefused(stageNamed("test running"), fromServer(states({State::ExchangeResults})),
                CodecError::OutOfOrder, "EXCHANGE_RESULTS before the client's TEST_END");
  expectRefused(stageNamed("test end"), fromServer(states({State::DisplayResults})),
                CodecError::OutOfOrder, "DISPLAY_RESULTS before EXCHANGE_RESULTS");
  expectRefused(stageNamed("results shown"), fromServer(states({State::TestStart})),
                CodecError::OutOfOrder, "TEST_START again");
  expectRefused(stageNamed("results shown"), fromServer(states({State::DisplayResults})),
                CodecError::OutOfOrder, "DISPLAY_RESULTS again");
  // Where its results are due, a state that is not an error stands out (its top byte would
  // announce more than the cap).
  expectRefused(stageNamed("results exchange"), fromServer(states({State::DisplayResults})),
                CodecError::OutOfOrder, "DISPLAY_RESULTS before its results");
}

TEST(ControlOrderTest, ServerResultsOnlyAfterTheClients) {
  // The server reads the client's results before it sends its own.
  expectRefused(stageNamed("results exchange"), fromServer(json(kServerResults)),
                CodecError::OutOfOrder, "results before the client's results");
}

TEST(ControlOrderTest, ServerNeverSendsIperfDone) {
  for (const std::string_view name : {"connected", "test running", "results shown"}) {
    expectRefused(stageNamed(name), fromServer(states({State::IperfDone})),
                  CodecError::UnknownState, "byte 16 is not a server state");
  }
}

TEST(ControlOrderTest, AccessDeniedOnlyFirstAndThenNothing) {
  expectRefused(stageNamed("parameter exchange"), fromServer(states({State::AccessDenied})),
                CodecError::OutOfOrder, "ACCESS_DENIED after PARAM_EXCHANGE");
  const Stage denied =
      stageNamed("connected")
          .then(fromServer(states({State::AccessDenied})), {"server ACCESS_DENIED"}, "denied");
  for (const State state :
       {State::ParamExchange, State::ServerError, State::ServerTerminate, State::AccessDenied}) {
    expectRefused(denied, fromServer(states({state})), CodecError::OutOfOrder,
                  std::string(stateName(state)) + " after ACCESS_DENIED",
                  "connected, after the server's ACCESS_DENIED");
  }
}

TEST(ControlOrderTest, AfterAServerErrorOnlyErrorsFollow) {
  const Stage failed = stageNamed("test running")
                           .then(fromServer(serverError(160, 0)),
                                 {"server SERVER_ERROR", "server error 160/0"}, "failed");
  const std::string stage = "test running, after the server's SERVER_ERROR";
  expectRefused(failed, fromServer(states({State::ExchangeResults})), CodecError::OutOfOrder,
                "EXCHANGE_RESULTS after SERVER_ERROR", stage);
  const Stage twice = failed.then(fromServer(serverError(160, 0)),
                                  {"server SERVER_ERROR", "server error 160/0"}, "failed twice");
  expectRefused(twice, fromServer(serverError(160, 0)), CodecError::OutOfOrder,
                "SERVER_ERROR a third time", stage);
  const Stage stopped = stageNamed("test running")
                            .then(fromServer(states({State::ServerTerminate})),
                                  {"server SERVER_TERMINATE"}, "stopped");
  expectRefused(stopped, fromServer(states({State::ServerTerminate})), CodecError::OutOfOrder,
                "SERVER_TERMINATE again", "test running, after the server's SERVER_TERMINATE");
  expectRefused(stopped, fromServer(states({State::TestRunning})), CodecError::OutOfOrder,
                "TEST_RUNNING after SERVER_TERMINATE",
                "test running, after the server's SERVER_TERMINATE");
}

}  // namespace
}  // namespace iperf3proxy::proto
