#include "proto/wire.h"

namespace iperf3proxy::proto {

std::string_view stateName(State state) {
  switch (state) {
    case State::TestStart:
      return "TEST_START";
    case State::TestRunning:
      return "TEST_RUNNING";
    case State::ResultRequest:
      return "RESULT_REQUEST";
    case State::TestEnd:
      return "TEST_END";
    case State::StreamBegin:
      return "STREAM_BEGIN";
    case State::StreamRunning:
      return "STREAM_RUNNING";
    case State::StreamEnd:
      return "STREAM_END";
    case State::AllStreamsEnd:
      return "ALL_STREAMS_END";
    case State::ParamExchange:
      return "PARAM_EXCHANGE";
    case State::CreateStreams:
      return "CREATE_STREAMS";
    case State::ServerTerminate:
      return "SERVER_TERMINATE";
    case State::ClientTerminate:
      return "CLIENT_TERMINATE";
    case State::ExchangeResults:
      return "EXCHANGE_RESULTS";
    case State::DisplayResults:
      return "DISPLAY_RESULTS";
    case State::IperfStart:
      return "IPERF_START";
    case State::IperfDone:
      return "IPERF_DONE";
    case State::AccessDenied:
      return "ACCESS_DENIED";
    case State::ServerError:
      return "SERVER_ERROR";
  }
  return "UNKNOWN";
}

namespace {

void appendBigEndian32(std::vector<std::uint8_t>& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<std::uint8_t>(value >> shift));
  }
}

}  // namespace

std::vector<std::uint8_t> encodeJsonMessage(std::string_view json) {
  std::vector<std::uint8_t> message;
  message.reserve(4 + json.size());
  appendBigEndian32(message, static_cast<std::uint32_t>(json.size()));
  message.insert(message.end(), json.begin(), json.end());
  return message;
}

std::vector<std::uint8_t> encodeServerError(std::int32_t i_errno, std::int32_t sys_errno) {
  std::vector<std::uint8_t> message{stateToWire(State::ServerError)};
  appendBigEndian32(message, static_cast<std::uint32_t>(i_errno));
  appendBigEndian32(message, static_cast<std::uint32_t>(sys_errno));
  return message;
}

}  // namespace iperf3proxy::proto
