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

std::vector<std::uint8_t> encodeJsonMessage(std::string_view json) {
  const auto length = static_cast<std::uint32_t>(json.size());
  std::vector<std::uint8_t> message;
  message.reserve(4 + json.size());
  for (int shift = 24; shift >= 0; shift -= 8) {
    message.push_back(static_cast<std::uint8_t>(length >> shift));
  }
  message.insert(message.end(), json.begin(), json.end());
  return message;
}

}  // namespace iperf3proxy::proto
