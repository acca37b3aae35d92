#pragma once

#include <cstddef>
#include <string_view>

namespace iperf3proxy::proxy {

// Why a test's session ended: the last field of the per-test log line.
enum class CloseReason {
  Completed,           // IPERF_DONE and an orderly close
  ServerBusy,          // the server answered ACCESS_DENIED
  ServerError,         // the server sent SERVER_ERROR and closed
  ControlClosedEarly,  // the control connection closed before the test ended
  ClientReset,         // socket error on the client's control connection
  ServerReset,         // socket error on the server's control connection
  ProtocolError,       // bytes on the control connection that are not iperf3
  ParamsRejected,      // parameters the proxy cannot route (see log detail)
  UnsupportedTest,     // a transport the proxy cannot carry
  BackendUnreachable,  // no control connection to the backend before the deadline
  StreamSetupTimeout,  // data connections not all there before the deadline
  StreamDialFailed,    // a backend data connection failed
  StreamClosedEarly,   // a data connection closed before it was paired
  IdleTimeout,         // nothing moved for too long
  DurationExceeded,    // the test asked for, or ran, longer than --max-duration
  TooManyStreams,      // the test asked for more data streams than --max-streams
  BitrateExceeded,     // the test asked for more than --max-bitrate, or for no limit
  TooManyTests,        // --max-tests sessions were already running
  TooManyClientTests,  // the client's address had --max-tests-per-client tests already
  NoBackendFree,       // every backend was running a test or refused it: answered "busy"
  QueueTimeout,        // waited --queue-timeout for a free backend: answered "busy"
  LocalResources,      // the proxy could not create a socket or pipe for the test
  Shutdown,            // the proxy is exiting
};

inline constexpr std::size_t kCloseReasonCount =
    static_cast<std::size_t>(CloseReason::Shutdown) + 1;

constexpr std::string_view closeReasonName(CloseReason reason) {
  switch (reason) {
    case CloseReason::Completed:
      return "completed";
    case CloseReason::ServerBusy:
      return "server-busy";
    case CloseReason::ServerError:
      return "server-error";
    case CloseReason::ControlClosedEarly:
      return "control-closed-early";
    case CloseReason::ClientReset:
      return "client-reset";
    case CloseReason::ServerReset:
      return "server-reset";
    case CloseReason::ProtocolError:
      return "protocol-error";
    case CloseReason::ParamsRejected:
      return "params-rejected";
    case CloseReason::UnsupportedTest:
      return "unsupported-test";
    case CloseReason::BackendUnreachable:
      return "backend-unreachable";
    case CloseReason::StreamSetupTimeout:
      return "stream-setup-timeout";
    case CloseReason::StreamDialFailed:
      return "stream-dial-failed";
    case CloseReason::StreamClosedEarly:
      return "stream-closed-early";
    case CloseReason::IdleTimeout:
      return "idle-timeout";
    case CloseReason::DurationExceeded:
      return "duration-exceeded";
    case CloseReason::TooManyStreams:
      return "too-many-streams";
    case CloseReason::BitrateExceeded:
      return "bitrate-exceeded";
    case CloseReason::TooManyTests:
      return "too-many-tests";
    case CloseReason::TooManyClientTests:
      return "too-many-client-tests";
    case CloseReason::NoBackendFree:
      return "no-backend-free";
    case CloseReason::QueueTimeout:
      return "queue-timeout";
    case CloseReason::LocalResources:
      return "local-resources";
    case CloseReason::Shutdown:
      return "shutdown";
  }
  return "unknown";
}

}  // namespace iperf3proxy::proxy
