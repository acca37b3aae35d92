#include "proto/control_order.h"

namespace iperf3proxy::proto {
namespace {

// 3.21+ report an error from their cleanup whenever iperf3's global error number is set, which
// can follow a SERVER_ERROR the parameter exchange already sent (docs/PROTOCOL.md §1.7).
constexpr int kMaxServerErrors = 2;

}  // namespace

std::string_view sideName(Side side) {
  return side == Side::Client ? "client" : "server";
}

bool ControlOrder::sends(Side side, State state) {
  if (side == Side::Client) {
    switch (state) {
      case State::TestEnd:
      case State::ClientTerminate:
      case State::IperfDone:
        return true;
      default:
        return false;
    }
  }
  switch (state) {
    case State::ParamExchange:
    case State::CreateStreams:
    case State::TestStart:
    case State::TestRunning:
    case State::ServerTerminate:
    case State::ExchangeResults:
    case State::DisplayResults:
    case State::AccessDenied:
    case State::ServerError:
      return true;
    default:
      return false;
  }
}

std::optional<std::string> ControlOrder::refusal(Side side, State state) const {
  return side == Side::Client ? clientRefusal(state) : serverRefusal(state);
}

std::optional<std::string> ControlOrder::clientRefusal(State state) const {
  switch (state) {
    case State::IperfDone:
      return client_done_ ? std::optional<std::string>("again") : std::nullopt;
    case State::ClientTerminate:
      return client_terminated_ ? std::optional<std::string>("again") : std::nullopt;
    case State::TestEnd:
      // The client ends the test once, from its running state (iperf_run_client).
      if (test_end_) {
        return "again";
      }
      if (client_done_) {
        return "after IPERF_DONE";
      }
      if (client_terminated_) {
        return "after CLIENT_TERMINATE";
      }
      if (server_ < ServerProgress::TestRunning) {
        return "before TEST_RUNNING";
      }
      return std::nullopt;
    default:
      return "never sent by a client";
  }
}

std::optional<std::string> ControlOrder::serverRefusal(State state) const {
  if (!cookie_) {
    return "before the client's cookie";
  }
  if (server_denied_) {
    return "after ACCESS_DENIED";  // the busy server closes right after it
  }
  if (state == State::ServerError) {
    return server_errors_ < kMaxServerErrors ? std::nullopt
                                             : std::optional<std::string>("a third time");
  }
  if (state == State::ServerTerminate) {
    return server_terminated_ ? std::optional<std::string>("again") : std::nullopt;
  }
  if (server_errors_ > 0) {
    return "after SERVER_ERROR";
  }
  if (server_terminated_) {
    return "after SERVER_TERMINATE";
  }
  if (state == State::AccessDenied) {
    // In place of PARAM_EXCHANGE: the server did not take the connection as a test.
    return server_ == ServerProgress::Connected
               ? std::nullopt
               : std::optional<std::string>("after PARAM_EXCHANGE");
  }

  // The normal sequence, one step at a time; two steps wait for the client.
  struct Step {
    State state;
    ServerProgress reached;
  };

  constexpr Step kSequence[] = {
      {State::ParamExchange, ServerProgress::ParamExchange},
      {State::CreateStreams, ServerProgress::CreateStreams},
      {State::TestStart, ServerProgress::TestStart},
      {State::TestRunning, ServerProgress::TestRunning},
      {State::ExchangeResults, ServerProgress::ExchangeResults},
      {State::DisplayResults, ServerProgress::ResultsShown},
  };
  const Step* step = nullptr;
  for (const Step& candidate : kSequence) {
    if (candidate.state == state) {
      step = &candidate;
    }
  }
  if (step == nullptr) {
    return "never sent by a server";
  }
  if (step->reached <= server_) {
    return "again";
  }
  switch (server_) {
    case ServerProgress::Connected:
      return state == State::ParamExchange ? std::nullopt
                                           : std::optional<std::string>("before PARAM_EXCHANGE");
    case ServerProgress::ParamExchange:
      if (state != State::CreateStreams) {
        return "before CREATE_STREAMS";
      }
      return params_ ? std::nullopt : std::optional<std::string>("before the client's parameters");
    case ServerProgress::CreateStreams:
      return state == State::TestStart ? std::nullopt
                                       : std::optional<std::string>("before TEST_START");
    case ServerProgress::TestStart:
      return state == State::TestRunning ? std::nullopt
                                         : std::optional<std::string>("before TEST_RUNNING");
    case ServerProgress::TestRunning:
      if (state != State::ExchangeResults) {
        return "before EXCHANGE_RESULTS";
      }
      return test_end_ ? std::nullopt : std::optional<std::string>("before the client's TEST_END");
    case ServerProgress::ExchangeResults:
      return "before its results";
    case ServerProgress::ResultsSent:
      return std::nullopt;  // DISPLAY_RESULTS, the only step left
    case ServerProgress::ResultsShown:
      break;  // every step was already taken: "again" above
  }
  return "out of order";
}

void ControlOrder::record(Side side, State state) {
  if (side == Side::Client) {
    switch (state) {
      case State::TestEnd:
        test_end_ = true;
        break;
      case State::IperfDone:
        client_done_ = true;
        break;
      case State::ClientTerminate:
        client_terminated_ = true;
        break;
      default:
        break;
    }
    return;
  }
  switch (state) {
    case State::ServerError:
      ++server_errors_;
      break;
    case State::ServerTerminate:
      server_terminated_ = true;
      break;
    case State::AccessDenied:
      server_denied_ = true;
      break;
    case State::ParamExchange:
      server_ = ServerProgress::ParamExchange;
      break;
    case State::CreateStreams:
      server_ = ServerProgress::CreateStreams;
      break;
    case State::TestStart:
      server_ = ServerProgress::TestStart;
      break;
    case State::TestRunning:
      server_ = ServerProgress::TestRunning;
      break;
    case State::ExchangeResults:
      server_ = ServerProgress::ExchangeResults;
      break;
    case State::DisplayResults:
      server_ = ServerProgress::ResultsShown;
      break;
    default:
      break;
  }
}

std::optional<JsonKind> ControlOrder::jsonDue(Side side) const {
  if (side == Side::Server) {
    if (server_ == ServerProgress::ExchangeResults && !serverEnded()) {
      return JsonKind::Results;
    }
    return std::nullopt;
  }
  if (client_done_ || client_terminated_) {
    return std::nullopt;
  }
  if (server_ >= ServerProgress::ParamExchange && !params_) {
    return JsonKind::Params;
  }
  if (server_ >= ServerProgress::ExchangeResults && !client_results_) {
    return JsonKind::Results;
  }
  return std::nullopt;
}

std::optional<std::string> ControlOrder::jsonRefusal(Side side) const {
  // The server reads the client's results before it sends its own (iperf_exchange_results).
  if (side == Side::Server && !client_results_) {
    return "results before the client's results";
  }
  return std::nullopt;
}

void ControlOrder::recordJson(Side side) {
  if (side == Side::Server) {
    server_ = ServerProgress::ResultsSent;
    return;
  }
  if (jsonDue(Side::Client) == JsonKind::Params) {
    params_ = true;
  } else {
    client_results_ = true;
  }
}

std::string ControlOrder::stage() const {
  if (!cookie_) {
    return "cookie";
  }
  std::string stage;
  switch (server_) {
    case ServerProgress::Connected:
      stage = "connected";
      break;
    case ServerProgress::ParamExchange:
      stage = params_ ? "parameters sent" : "parameter exchange";
      break;
    case ServerProgress::CreateStreams:
      stage = "stream creation";
      break;
    case ServerProgress::TestStart:
      stage = "test start";
      break;
    case ServerProgress::TestRunning:
      stage = test_end_ ? "test end" : "test running";
      break;
    case ServerProgress::ExchangeResults:
    case ServerProgress::ResultsSent:
      stage = "results exchange";
      break;
    case ServerProgress::ResultsShown:
      stage = "results shown";
      break;
  }
  if (server_denied_) {
    stage += ", after the server's ACCESS_DENIED";
  }
  if (server_errors_ > 0) {
    stage += ", after the server's SERVER_ERROR";
  }
  if (server_terminated_) {
    stage += ", after the server's SERVER_TERMINATE";
  }
  if (client_done_) {
    stage += ", after the client's IPERF_DONE";
  }
  if (client_terminated_) {
    stage += ", after the client's CLIENT_TERMINATE";
  }
  return stage;
}

}  // namespace iperf3proxy::proto
