#include "proto/wire.h"

#include <cstdint>
#include <set>
#include <string>

#include <gtest/gtest.h>

namespace iperf3proxy::proto {
namespace {

constexpr State kAllStates[] = {
    State::TestStart,       State::TestRunning,    State::ResultRequest,   State::TestEnd,
    State::StreamBegin,     State::StreamRunning,  State::StreamEnd,       State::AllStreamsEnd,
    State::ParamExchange,   State::CreateStreams,  State::ServerTerminate, State::ClientTerminate,
    State::ExchangeResults, State::DisplayResults, State::IperfStart,      State::IperfDone,
    State::AccessDenied,    State::ServerError,
};

TEST(WireTest, StateBytesAreSignedChars) {
  EXPECT_EQ(stateFromWire(0xff), State::AccessDenied);
  EXPECT_EQ(stateFromWire(0xfe), State::ServerError);
  EXPECT_EQ(stateToWire(State::AccessDenied), 0xff);
  EXPECT_EQ(stateToWire(State::ServerError), 0xfe);
}

TEST(WireTest, StateValuesMatchIperf3) {
  EXPECT_EQ(stateToWire(State::TestStart), 0x01);
  EXPECT_EQ(stateToWire(State::TestRunning), 0x02);
  EXPECT_EQ(stateToWire(State::TestEnd), 0x04);
  EXPECT_EQ(stateToWire(State::ParamExchange), 0x09);
  EXPECT_EQ(stateToWire(State::CreateStreams), 0x0a);
  EXPECT_EQ(stateToWire(State::ServerTerminate), 0x0b);
  EXPECT_EQ(stateToWire(State::ClientTerminate), 0x0c);
  EXPECT_EQ(stateToWire(State::ExchangeResults), 0x0d);
  EXPECT_EQ(stateToWire(State::DisplayResults), 0x0e);
  EXPECT_EQ(stateToWire(State::IperfDone), 0x10);
}

TEST(WireTest, EveryStateRoundTripsAndHasADistinctName) {
  std::set<std::string_view> names;
  for (const State state : kAllStates) {
    EXPECT_EQ(stateFromWire(stateToWire(state)), state);
    const std::string_view name = stateName(state);
    EXPECT_NE(name, "UNKNOWN");
    EXPECT_TRUE(names.insert(name).second) << name;
  }
  EXPECT_EQ(stateName(State::ParamExchange), "PARAM_EXCHANGE");
  EXPECT_EQ(stateName(State::ServerError), "SERVER_ERROR");
}

TEST(WireTest, UndefinedByteHasUnknownName) {
  EXPECT_EQ(stateName(stateFromWire(0x11)), "UNKNOWN");
  EXPECT_EQ(stateName(stateFromWire(0x61)), "UNKNOWN");
  EXPECT_EQ(stateName(stateFromWire(0x00)), "UNKNOWN");
  EXPECT_EQ(stateName(stateFromWire(0xfd)), "UNKNOWN");
}

TEST(WireTest, Constants) {
  EXPECT_EQ(kCookieSize, 37u);
  EXPECT_EQ(kServerErrorPayloadSize, 8u);
  EXPECT_EQ(kMaxStreamsPerDirection, 128);
  EXPECT_GE(kDefaultMaxParamsJson, 8192u);  // iperf3 >= 3.18 itself accepts 8 KiB
  EXPECT_GT(kDefaultMaxResultsJson, kDefaultMaxParamsJson);
}

}  // namespace
}  // namespace iperf3proxy::proto
