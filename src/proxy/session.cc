#include "proxy/session.h"

#include <sys/socket.h>

#include <cerrno>
#include <vector>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"
#include "proto/wire.h"
#include "proxy/test_policy.h"

namespace iperf3proxy::proxy {
namespace {

constexpr long kIdleTickMs = 1000;

// What the iperf3 server writes on a connection it refuses: ACCESS_DENIED.
constexpr std::uint8_t kAccessDeniedByte = 0xff;

double secondsOf(std::chrono::steady_clock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

}  // namespace

Session::Session(ev::EventLoop& loop,
                 const ProxySettings& settings,
                 SessionHost& host,
                 proto::Cookie cookie,
                 net::UniqueFd client,
                 net::Address client_address,
                 std::chrono::steady_clock::time_point accepted)
    : loop_(loop),
      settings_(settings),
      host_(host),
      cookie_(cookie),
      client_address_(client_address),
      started_(accepted),
      waiting_since_(started_),
      client_control_(std::move(client)),
      stream_setup_deadline_(loop, [this] { onRoleDeadline(); }),
      role_deadline_(loop, [this] { onRoleDeadline(); }),
      end_linger_(loop,
                  [this] {
                    if (results_shown_) {
                      close(CloseReason::Completed, "control did not close after IPERF_DONE");
                    } else {
                      closeDone();
                    }
                  }),
      idle_tick_(loop, [this] { onIdleTick(); }),
      test_deadline_(loop, [this] {
        close(CloseReason::DurationExceeded,
              fmt::format("still running {} s after --max-duration",
                          settings_.timeouts.duration_grace_ms / 1000));
      }) {}

Session::~Session() = default;

std::string Session::prefix() const {
  return "[s:" + std::string(cookie_.shortForm()) + "]";
}

void Session::start(std::optional<pool::Lease> lease) {
  if (lease) {
    spdlog::debug("{} new test from {}", prefix(), client_address_.toString());
    connectBackend(std::move(*lease));
    return;
  }
  spdlog::debug("{} new test from {}, waiting for a free backend", prefix(),
                client_address_.toString());
  watchClientWhileWaiting();
}

// ---- Backend ----------------------------------------------------------------------------------

void Session::watchClientWhileWaiting() {
  // While the test waits for a backend, the client waits for PARAM_EXCHANGE and sends nothing:
  // readable means it closed (or broke the protocol); either way the test is over.
  waiting_since_ = std::chrono::steady_clock::now();
  client_watch_ = std::make_unique<ev::IoEvent>(
      loop_, client_control_.get(), ev::IoEvent::Kind::Read, [this] { onClientWhileWaiting(); });
  client_watch_->enable();
}

void Session::onClientWhileWaiting() {
  if (closed_) {
    return;
  }
  std::uint8_t byte = 0;
  const ssize_t n = ::recv(client_control_.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
    return;
  }
  if (n == 1) {
    close(CloseReason::ProtocolError,
          "the client sent data before the server's PARAM_EXCHANGE (while waiting for a backend)");
    return;
  }
  close(CloseReason::ControlClosedEarly,
        n == 0 ? "the client left while waiting for a backend" : net::errnoText(errno));
}

void Session::onBackendGranted(pool::Lease lease) {
  if (closed_) {
    return;
  }
  if (client_watch_) {
    client_watch_->disable();
    loop_.deferredDestroy(std::move(client_watch_));
  }
  queued_ += std::chrono::steady_clock::now() - waiting_since_;
  connectBackend(std::move(lease));
}

void Session::onNoBackend(CloseReason reason, const std::string& detail) {
  if (closed_) {
    return;
  }
  if (reason == CloseReason::BackendUnreachable) {
    // No server is up at all: the client prints "unable to connect to server", as it would if
    // it had tried the server itself.
    sendToClientNow(proto::encodeServerError(proto::ierrno::kConnect, ECONNREFUSED));
  } else {
    // What an iperf3 server says to a client it cannot take: every client prints "the server
    // is busy running a test. try again later".
    sendToClientNow(std::span(&kAccessDeniedByte, 1));
  }
  close(reason, last_fault_.empty() ? detail : detail + "; last: " + last_fault_);
}

void Session::connectBackend(pool::Lease lease) {
  spdlog::debug("{} connecting to backend {}", prefix(), lease.name);
  lease_ = lease;
  link_ = std::make_unique<BackendLink>(
      loop_, std::move(lease), cookie_, settings_.timeouts.backend_connect_ms,
      BackendLink::Callbacks{
          [this](net::UniqueFd fd, std::vector<std::uint8_t> answer) {
            onBackendAnswered(std::move(fd), std::move(answer));
          },
          [this](pool::BackendFault fault, std::string detail) { onBackendFault(fault, detail); },
          [this](std::string detail) {
            // Answered "busy": try again later, when the proxy has room.
            onNoBackend(CloseReason::LocalResources,
                        "connecting to backend " + (lease_ ? lease_->name : std::string("?")) +
                            ": " + detail);
          }});
  link_->start();
}

void Session::onBackendFault(pool::BackendFault fault, const std::string& detail) {
  if (closed_) {
    return;
  }
  ++backend_faults_;
  last_fault_ =
      fmt::format("{} {} ({})", lease_ ? lease_->name : "?", pool::backendFaultName(fault), detail);
  // The client has seen nothing of this backend yet: another one can take the test unseen.
  spdlog::info("{} backend {}; asking for another", prefix(), last_fault_);
  loop_.deferredDestroy(std::move(link_));
  lease_.reset();
  watchClientWhileWaiting();
  host_.backendFault(cookie_, fault);
}

void Session::onBackendAnswered(net::UniqueFd fd, std::vector<std::uint8_t> answer) {
  if (closed_) {
    return;
  }
  loop_.deferredDestroy(std::move(link_));
  idle_tick_.armMs(kIdleTickMs);
  control_ =
      std::make_unique<ControlRelay>(loop_, std::move(client_control_), std::move(fd),
                                     settings_.codec, static_cast<ControlRelayCallbacks&>(*this));
  control_->startAnswered(cookie_.bytes(), answer);
}

// ---- Control events ---------------------------------------------------------------------------

void Session::onControlEvent(const proto::ControlEvent& event) {
  if (closed_) {
    return;
  }
  if (const auto* params = std::get_if<proto::ParamsReceived>(&event)) {
    onParams(*params);
  } else if (const auto* rejected = std::get_if<proto::ParamsRejected>(&event)) {
    sendToClientNow(proto::encodeServerError(proto::ierrno::kRecvParams, 0));
    close(CloseReason::ParamsRejected, rejected->failure.detail);
  } else if (const auto* state = std::get_if<proto::StateReceived>(&event)) {
    onState(*state);
  } else if (const auto* results = std::get_if<proto::ResultsReceived>(&event);
             results && results->too_large_to_capture) {
    spdlog::warn(
        "{} server results of {} bytes are above {} bytes; its report is forwarded "
        "untranslated (names the proxy's addresses)",
        prefix(), results->json_size, settings_.codec.max_captured_results);
  } else if (const auto* error = std::get_if<proto::ServerErrorReceived>(&event)) {
    server_error_ = *error;
    spdlog::info("{} server error i_errno={} errno={}", prefix(), error->i_errno,
                 error->sys_errno.value_or(0));
  }
}

void Session::onParams(const proto::ParamsReceived& received) {
  params_ = received.params;
  spdlog::debug("{} params: {} {} streams/direction={} role_byte={} client_version={}", prefix(),
                proto::transportName(params_->transport), proto::testModeName(params_->mode),
                params_->streams_per_direction, params_->role_byte, params_->client_version);
  if (const auto refusal = checkTestPolicy(*params_, settings_.limits, settings_.policy)) {
    sendToClientNow(proto::encodeServerError(refusal->i_errno, 0));
    close(refusal->reason, refusal->detail);
    return;
  }
  if (params_->get_server_output) {
    // The server's report names the addresses of the connections it sees, which are the proxy's.
    server_report_ = std::make_unique<ServerReportTranslation>(prefix());
    server_report_->addConnection(proto::ConnectionView::Kind::Control, control_->clientFd(),
                                  control_->serverFd());
    control_->translateServerResults(
        [this](std::string_view json) { return server_report_->translate(json); });
  }
}

void Session::onState(const proto::StateReceived& received) {
  using proto::State;
  spdlog::debug("{} {} -> {}", prefix(), proto::sideName(received.from),
                proto::stateName(received.state));
  if (received.from == proto::Side::Server) {
    switch (received.state) {
      case State::CreateStreams:
        beginStreamCreation();
        return;
      case State::TestRunning:
        running_ = true;
        host_.testRunning(std::chrono::steady_clock::now() - started_);
        if (settings_.limits.max_duration_s > 0 && params_) {
          // Byte- and block-bound tests (-n, -k) have no -t to check up front: they are stopped
          // once they run past the cap, with the same grace iperf3 gives its own timers.
          const std::int64_t omit = std::max<std::int64_t>(0, params_->omit_s);
          test_deadline_.armMs(
              (settings_.limits.max_duration_s + std::min<std::int64_t>(omit, 86'400)) * 1000 +
              settings_.timeouts.duration_grace_ms);
        }
        if (tcp_ && !tcp_->allPaired()) {
          role_deadline_.armMs(settings_.timeouts.role_settle_ms);
        }
        return;
      case State::AccessDenied:
        busy_ = true;
        return;
      case State::DisplayResults:
        results_shown_ = true;
        return;
      default:
        break;
    }
  }
  if (received.from == proto::Side::Client && received.state == State::TestEnd) {
    onTestEnd();
    return;
  }
  if (received.state == State::IperfDone) {
    done_ = true;
    host_.testFinishing(cookie_);
    creating_streams_ = false;
    endUdpSetup();
    stream_setup_deadline_.disarm();
    role_deadline_.disarm();
    test_deadline_.disarm();
    end_linger_.armMs(settings_.timeouts.end_linger_ms);
  }
}

void Session::onTestEnd() {
  if (test_end_seen_ || !tcp_ || !control_) {
    return;
  }
  test_end_seen_ = true;
  control_->holdClientToServer([this](std::size_t held) {
    close(CloseReason::ProtocolError,
          fmt::format("client sent {} bytes while its TEST_END was held (cap {})", held,
                      ControlRelay::kMaxHeldBytes));
  });
  tcp_->drainUploads(settings_.timeouts.upload_drain_ms, [this] {
    if (control_ && !closed_) {
      control_->releaseClientToServer();
    }
  });
}

void Session::beginStreamCreation() {
  if (!params_) {
    close(CloseReason::ProtocolError, "CREATE_STREAMS before any parameters");
    return;
  }
  creating_streams_ = true;
  stream_setup_deadline_.armMs(settings_.timeouts.stream_setup_ms);
  if (params_->transport == proto::Transport::Udp) {
    // UDP needs no role work: stream setup is lock-step, so the server accepts the flows in the
    // client's creation order as long as the proxy forwards them as they come (docs/PROTOCOL.md
    // §7.5). But a flow carries no cookie: it is known only by its source address, so the
    // client may start only when no other test from its address is setting up UDP streams.
    udp_ = std::make_unique<UdpStreams>(loop_, host_.udpIo(), lease_->address,
                                        params_->totalStreams());
    control_->holdServerToClient();
    udp_turn_requested_ = true;
    host_.requestUdpSetup(cookie_, client_address_.hostString());
    return;
  }
  tcp_ = std::make_unique<TcpStreams>(
      loop_, *params_, lease_->address, cookie_, settings_.timeouts.backend_connect_ms, prefix(),
      host_.pipePool(),
      TcpStreams::Callbacks{[this](int client_fd, int server_fd) {
                              if (server_report_) {
                                server_report_->addConnection(proto::ConnectionView::Kind::Data,
                                                              client_fd, server_fd);
                              }
                            },
                            [this] { onAllPaired(); },
                            [this](CloseReason reason, std::string detail) {
                              close(reason, detail);
                            }});
}

void Session::onUdpSetupGranted() {
  if (closed_ || !control_) {
    return;
  }
  spdlog::debug("{} UDP stream setup may begin", prefix());
  control_->releaseServerToClient();
}

void Session::onControlProtocolError(const proto::CodecFailure& failure) {
  close(CloseReason::ProtocolError,
        fmt::format("{} at byte {}: {} ({})", proto::sideName(failure.side), failure.offset,
                    proto::codecErrorName(failure.error), failure.detail));
}

void Session::onControlError(proto::Side side, int error) {
  if (done_) {
    closeDone();
  } else if (busy_) {
    close(CloseReason::ServerBusy);
  } else {
    close(side == proto::Side::Client ? CloseReason::ClientReset : CloseReason::ServerReset,
          net::errnoText(error));
  }
}

void Session::closeDone() {
  // Clients up to 3.12 at least send IPERF_DONE on their error path too (iperf_client_end):
  // only after the server's DISPLAY_RESULTS does it mean the test ran to its end.
  if (results_shown_) {
    close(CloseReason::Completed);
  } else {
    close(CloseReason::ControlClosedEarly, "the client gave up (IPERF_DONE before the results)");
  }
}

void Session::onControlFinished() {
  if (done_) {
    closeDone();
  } else if (busy_) {
    close(CloseReason::ServerBusy);
  } else if (server_error_) {
    close(CloseReason::ServerError);
  } else {
    close(CloseReason::ControlClosedEarly);
  }
}

// ---- Data connections -------------------------------------------------------------------------

void Session::attachStream(net::UniqueFd fd, const net::Address& peer) {
  if (closed_) {
    return;
  }
  if (!creating_streams_ || !params_) {
    rejectStream(std::move(fd), peer, "the test is not creating streams");
    return;
  }
  if (!tcp_) {
    rejectStream(std::move(fd), peer, "a TCP data connection in a UDP test");
    return;
  }
  if (tcp_->clientStreams() >= params_->totalStreams()) {
    rejectStream(
        std::move(fd), peer,
        fmt::format("more data connections than the test declared ({})", params_->totalStreams()));
    return;
  }
  tcp_->add(std::move(fd), peer);
}

void Session::onAllPaired() {
  creating_streams_ = false;
  stream_setup_deadline_.disarm();
  role_deadline_.disarm();
}

void Session::onDatagram(const net::Address& proxy_local,
                         const net::Address& source,
                         std::span<const std::uint8_t> datagram) {
  if (closed_ || !udp_) {
    return;
  }
  if (udp_->route(source, datagram)) {
    return;
  }
  if (!creating_streams_ || udp_->complete()) {
    return;  // the front counts no drop here: it only sends what the test may take
  }
  std::string error;
  const UdpFlow* flow = udp_->open(proxy_local, source, datagram, &error);
  if (flow == nullptr) {
    close(CloseReason::LocalResources, "UDP flow from " + source.toString() + ": " + error);
    return;
  }
  spdlog::debug("{} UDP flow {} from {}", prefix(), udp_->count() - 1, source.toString());
  if (server_report_) {
    server_report_->addConnection(proto::ConnectionView::Kind::Data, flow->clientFd(),
                                  flow->serverFd());
  }
  if (udp_->complete()) {
    creating_streams_ = false;
    stream_setup_deadline_.disarm();
    endUdpSetup();
  }
}

void Session::endUdpSetup() {
  if (udp_turn_requested_) {
    udp_turn_requested_ = false;
    host_.udpSetupDone(cookie_);
  }
}

void Session::onRoleDeadline() {
  if (closed_) {
    return;
  }
  if (udp_) {
    if (creating_streams_) {
      close(CloseReason::StreamSetupTimeout,
            fmt::format("{} of {} UDP flows within {} ms", udp_->count(), udp_->expected(),
                        settings_.timeouts.stream_setup_ms));
    }
    return;
  }
  if (tcp_ && !tcp_->settleByGuess()) {
    close(CloseReason::StreamSetupTimeout,
          fmt::format("{} of {} client and {} of {} backend data connections within {} ms",
                      tcp_->clientStreams(), params_->totalStreams(), tcp_->serverStreams(),
                      params_->totalStreams(), settings_.timeouts.stream_setup_ms));
  }
}

void Session::onIdleTick() {
  if (closed_) {
    return;
  }
  std::uint64_t total = bytesUp() + bytesDown();
  if (control_) {
    total += control_->bytesFromClient() + control_->bytesFromServer();
  }
  countTraffic();
  idle_ms_ = total == last_total_bytes_ ? idle_ms_ + kIdleTickMs : 0;
  last_total_bytes_ = total;
  if (idle_ms_ >= settings_.timeouts.idle_ms) {
    close(CloseReason::IdleTimeout, fmt::format("nothing moved for {} ms", idle_ms_));
    return;
  }
  idle_tick_.armMs(kIdleTickMs);
}

std::uint64_t Session::bytesUp() const {
  return (tcp_ ? tcp_->bytesUp() : 0) + (udp_ ? udp_->bytesUp() : 0);
}

std::uint64_t Session::bytesDown() const {
  return (tcp_ ? tcp_->bytesDown() : 0) + (udp_ ? udp_->bytesDown() : 0);
}

void Session::countTraffic() {
  if (!params_) {
    return;  // no test data before the parameters
  }
  const std::uint64_t up = bytesUp();
  const std::uint64_t down = bytesDown();
  host_.traffic().add(params_->transport, up - counted_up_, down - counted_down_);
  counted_up_ = up;
  counted_down_ = down;
}

void Session::rejectStream(net::UniqueFd fd, const net::Address& peer, const std::string& why) {
  // The answer the iperf3 server itself gives a data connection it does not want.
  (void)::send(fd.get(), &kAccessDeniedByte, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  spdlog::warn("{} refused data connection from {}: {}", prefix(), peer.toString(), why);
}

void Session::sendToClientNow(std::span<const std::uint8_t> bytes) {
  if (control_) {
    control_->sendToClientNow(bytes);
  } else if (client_control_) {
    // A few bytes into a socket whose send buffer is empty: this does not block or write short.
    (void)::send(client_control_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
}

// ---- End of the test --------------------------------------------------------------------------

TestSummary Session::summary() const {
  TestSummary s;
  s.id = std::string(cookie_.shortForm());
  s.client = client_address_.toString();
  s.params = params_;
  s.backend = lease_ ? lease_->name : "";
  s.bytes_up = bytesUp();
  s.bytes_down = bytesDown();
  s.seconds = secondsOf(std::chrono::steady_clock::now() - started_);
  s.queued_seconds = secondsOf(queued_);
  s.reason = reason_;
  s.detail = reason_detail_;
  if (tcp_) {
    const StreamPairing& pairing = tcp_->pairing();
    s.roles_repaired = pairing.repairedRoles();
    s.out_of_order = pairing.misorderedArrivals();
    s.roles_guessed = pairing.rolesGuessed();
    s.backend_role_mismatch = pairing.backendRoleMismatch();
  }
  s.udp_dropped = udp_ ? udp_->dropped() : 0;
  s.backend_attempts = backend_faults_;
  return s;
}

void Session::close(CloseReason reason, const std::string& detail) {
  if (closed_) {
    return;
  }
  closed_ = true;
  reason_ = reason;
  reason_detail_ = detail;
  if (client_watch_) {
    client_watch_->disable();
  }
  if (link_) {
    link_->stop();
  }
  if (control_) {
    control_->stop();
  }
  if (tcp_) {
    tcp_->stop();
  }
  if (udp_) {
    udp_->stop();
  }
  for (ev::Timer* timer :
       {&stream_setup_deadline_, &role_deadline_, &end_linger_, &idle_tick_, &test_deadline_}) {
    timer->disarm();
  }
  // Counted once, after everything stopped: nothing moves after the summary line.
  countTraffic();
  const TestSummary record = summary();
  logTestEnded(record);
  endUdpSetup();
  // Held against the backend (a backoff before its next test): its side broke. A client that
  // vanished (an idle timeout, a reset from the client) says nothing about the server.
  const bool backend_broke =
      reason_ == CloseReason::ServerReset || reason_ == CloseReason::StreamDialFailed;
  // Sockets close when the host destroys this session, after the current callback returns.
  host_.sessionEnded(cookie_, record, backend_broke);
}

}  // namespace iperf3proxy::proxy
