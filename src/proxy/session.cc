#include "proxy/session.h"

#include <sys/socket.h>

#include <cerrno>
#include <vector>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"
#include "proto/wire.h"

namespace iperf3proxy::proxy {
namespace {

constexpr long kBackendRetryMs = 50;
constexpr long kIdleTickMs = 1000;
// Upper bound on holding the client's TEST_END while its test data reaches the server.
constexpr long kDrainDeadlineMs = 2000;
// Beyond --max-duration (plus omit), how long a test may run before it is stopped.
constexpr long kDurationGraceMs = 10'000;

// What the iperf3 server writes on a data connection it refuses.
constexpr std::uint8_t kAccessDeniedByte = 0xff;

}  // namespace

Session::Session(ev::EventLoop& loop,
                 const ProxySettings& settings,
                 SessionOwner& owner,
                 proto::Cookie cookie,
                 net::UniqueFd client,
                 net::Address client_address)
    : loop_(loop),
      settings_(settings),
      owner_(owner),
      cookie_(cookie),
      client_address_(client_address),
      started_(std::chrono::steady_clock::now()),
      client_control_(std::move(client)),
      backend_retry_(loop, [this] { connectBackend(); }),
      backend_deadline_(loop, [this] { onBackendConnectFailed(last_connect_error_); }),
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
      test_deadline_(
          loop,
          [this] {
            close(CloseReason::DurationExceeded,
                  fmt::format("still running {} s after --max-duration", kDurationGraceMs / 1000));
          }),
      drain_deadline_(loop, [this] {
        // The drain ends here for every stream too: their ticks stop, TEST_END goes on.
        uploads_draining_ = 0;
        for (const auto& relay : relays_) {
          relay->stopDrain();
        }
        if (control_) {
          control_->releaseClientToServer();
        }
      }) {}

Session::~Session() = default;

std::string Session::prefix() const {
  return "[s:" + std::string(cookie_.shortForm()) + "]";
}

void Session::start() {
  backend_ = owner_.backendAddress();
  if (!backend_) {
    onBackendConnectFailed(ECONNREFUSED);
    return;
  }
  spdlog::debug("{} new test from {}, connecting to backend {}", prefix(),
                client_address_.toString(), backend_->toString());
  backend_deadline_.armMs(settings_.timeouts.backend_connect_ms);
  idle_tick_.armMs(kIdleTickMs);
  connectBackend();
}

bool Session::finishingWithBackend() const {
  return done_ && !closed_;
}

// ---- Backend control connection ---------------------------------------------------------------

void Session::connectBackend() {
  if (backend_connect_event_) {
    backend_connect_event_->disable();
    loop_.deferredDestroy(std::move(backend_connect_event_));
  }
  // While the previous test is still closing, the server is not listening for a new client
  // yet: a connect now would be answered "busy" or reset with the old listener. Wait for it
  // (bounded by the backend deadline), as a direct client would only come after it.
  if (owner_.backendFinishingTest(*this)) {
    backend_retry_.armMs(kBackendRetryMs / 5);
    return;
  }
  backend_connecting_ = net::startConnect(*backend_);
  if (!backend_connecting_) {
    last_connect_error_ = errno;
    if (errno == ECONNREFUSED) {
      backend_retry_.armMs(kBackendRetryMs);
      return;
    }
    onBackendConnectFailed(errno);
    return;
  }
  backend_connect_event_ =
      std::make_unique<ev::IoEvent>(loop_, backend_connecting_.get(), ev::IoEvent::Kind::Write,
                                    [this] { onBackendConnectReady(); });
  backend_connect_event_->enable();
}

void Session::onBackendConnectReady() {
  backend_connect_event_->disable();
  const int error = net::socketError(backend_connecting_.get());
  last_connect_error_ = error;
  if (error == ECONNREFUSED) {
    // The iperf3 server closes and re-opens its listener between tests (protocol §1.6): a
    // refusal right after a test is expected and short.
    backend_connecting_.reset();
    backend_retry_.armMs(kBackendRetryMs);
    return;
  }
  if (error != 0) {
    onBackendConnectFailed(error);
    return;
  }
  backend_deadline_.disarm();
  control_ = std::make_unique<ControlRelay>(loop_, std::move(client_control_),
                                            std::move(backend_connecting_), settings_.codec,
                                            static_cast<ControlRelayCallbacks&>(*this));
  control_->start(cookie_.bytes());
}

void Session::onBackendConnectFailed(int error) {
  if (closed_) {
    return;
  }
  // The client is connected to the proxy, so it would wait for the server forever: tell it in
  // the iperf3 way, as a server error naming a failed connect.
  sendServerError(proto::ierrno::kConnect, error);
  close(CloseReason::BackendUnreachable,
        backend_ ? backend_->toString() + ": " + net::errnoText(error) : "no backend");
}

// ---- Control events ---------------------------------------------------------------------------

void Session::onControlEvent(const proto::ControlEvent& event) {
  if (closed_) {
    return;
  }
  if (const auto* params = std::get_if<proto::ParamsReceived>(&event)) {
    onParams(*params);
  } else if (const auto* rejected = std::get_if<proto::ParamsRejected>(&event)) {
    sendServerError(proto::ierrno::kRecvParams, 0);
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
  if (params_->transport == proto::Transport::Sctp) {
    sendServerError(proto::ierrno::kProtocol, 0);
    close(CloseReason::UnsupportedTest, "SCTP cannot be carried by a TCP/UDP proxy");
    return;
  }
  const long cap = settings_.limits.max_duration_s;
  if (cap > 0 && params_->duration_s + params_->omit_s > cap) {
    // Refused before the server sees the parameters, the way 3.20+ servers refuse a test above
    // --server-max-duration.
    sendServerError(proto::ierrno::kDuration, 0);
    close(CloseReason::DurationExceeded, fmt::format("-t {} -O {} is above --max-duration {}",
                                                     params_->duration_s, params_->omit_s, cap));
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
        if (settings_.limits.max_duration_s > 0) {
          // Byte- and block-bound tests (-n, -k) have no -t to check up front: they are stopped
          // once they run past the cap, with the same grace iperf3 gives its own timers.
          test_deadline_.armMs((settings_.limits.max_duration_s + params_->omit_s) * 1000 +
                               kDurationGraceMs);
        }
        if (pairing_ && !pairing_->allPaired()) {
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
    drainUploadsBeforeTestEnd();
    return;
  }
  if (received.state == State::IperfDone) {
    done_ = true;
    creating_streams_ = false;
    stream_setup_deadline_.disarm();
    role_deadline_.disarm();
    test_deadline_.disarm();
    end_linger_.armMs(settings_.timeouts.end_linger_ms);
  }
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
    // client's creation order as long as the proxy forwards them as they come (protocol §7.5).
    return;
  }
  pairing_ = std::make_unique<StreamPairing>(
      loop_, *params_, *backend_, cookie_, settings_.timeouts.backend_connect_ms, prefix(),
      StreamPairing::Callbacks{
          [this](roles::Flow flow, net::UniqueFd client, net::UniqueFd server) {
            startRelay(flow, std::move(client), std::move(server));
          },
          [this] { onAllPaired(); },
          [this](CloseReason reason, std::string detail) {
            close(reason, detail);
          }});
}

void Session::onControlProtocolError(const proto::CodecFailure& failure) {
  close(CloseReason::ProtocolError,
        fmt::format("{} at byte {}: {} ({})", proto::sideName(failure.side), failure.offset,
                    proto::codecErrorName(failure.error), failure.detail));
}

bool Session::retryBackendBeforeFirstByte() {
  // The server reset or closed the new control connection before saying anything: it landed in
  // the backlog of a listener the server was just closing (it re-creates it around every test).
  // Nothing reached the client yet, so connecting again is invisible to it.
  if (!control_ || control_->bytesFromServer() > 0 || !backend_deadline_retry_allowed_) {
    return false;
  }
  spdlog::debug("{} backend closed the control connection before its first byte; reconnecting",
                prefix());
  client_control_ = control_->releaseClient();
  loop_.deferredDestroy(std::move(control_));
  backend_deadline_retry_allowed_ = false;
  backend_deadline_.armMs(settings_.timeouts.backend_connect_ms);
  backend_retry_.armMs(kBackendRetryMs);
  return true;
}

void Session::onControlError(proto::Side side, int error) {
  if (side == proto::Side::Server && retryBackendBeforeFirstByte()) {
    return;
  }
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
  if (retryBackendBeforeFirstByte()) {
    return;
  }
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
  if (!pairing_) {
    rejectStream(std::move(fd), peer, "a TCP data connection in a UDP test");
    return;
  }
  if (pairing_->clientStreams() >= params_->totalStreams()) {
    rejectStream(
        std::move(fd), peer,
        fmt::format("more data connections than the test declared ({})", params_->totalStreams()));
    return;
  }
  pairing_->addClientStream(std::move(fd), peer.port());
}

void Session::onAllPaired() {
  creating_streams_ = false;
  stream_setup_deadline_.disarm();
  role_deadline_.disarm();
}

void Session::startRelay(roles::Flow flow, net::UniqueFd client, net::UniqueFd server) {
  if (server_report_) {
    server_report_->addConnection(proto::ConnectionView::Kind::Data, client.get(), server.get());
  }
  auto relay = std::make_unique<StreamRelay>(
      loop_, static_cast<int>(relays_.size()), flow, std::move(client), std::move(server),
      [this](StreamRelay& done, const SplicePump::Completion& completion) {
        onRelayDone(done, completion);
      });
  if (!relay->start()) {
    close(CloseReason::StreamDialFailed, "cannot create pipes: " + net::errnoText(errno));
    return;
  }
  relays_.push_back(std::move(relay));
}

void Session::onRelayDone(StreamRelay& relay, const SplicePump::Completion& completion) {
  bytes_up_ += relay.bytesFromClient();
  bytes_down_ += relay.bytesFromServer();
  spdlog::debug("{} stream {} ({}) ended: {} bytes up, {} bytes down, {}", prefix(), relay.index(),
                relay.flow() == roles::Flow::Upload ? "upload" : "download",
                relay.bytesFromClient(), relay.bytesFromServer(),
                completion.outcome == SplicePump::Outcome::Closed
                    ? std::string("closed")
                    : std::string(completion.at_first ? "client " : "server ") +
                          net::errnoText(completion.error));
  for (auto it = relays_.begin(); it != relays_.end(); ++it) {
    if (it->get() == &relay) {
      std::unique_ptr<StreamRelay> finished = std::move(*it);
      relays_.erase(it);
      loop_.deferredDelete(std::move(finished));
      return;
    }
  }
}

bool Session::wantsUdpFlowFrom(const net::Address& source) const {
  return !closed_ && creating_streams_ && params_ && params_->transport == proto::Transport::Udp &&
         static_cast<int>(flows_.size()) < params_->totalStreams() &&
         source.hostString() == client_address_.hostString();
}

bool Session::routeUdp(const net::Address& source, std::span<const std::uint8_t> datagram) {
  for (const auto& flow : flows_) {
    if (flow->client().port() == source.port() &&
        flow->client().hostString() == source.hostString()) {
      flow->fromClient(datagram);
      return true;
    }
  }
  return false;
}

void Session::attachUdpFlow(const net::Address& proxy_local,
                            const net::Address& source,
                            std::span<const std::uint8_t> first_datagram) {
  std::string error;
  auto flow = UdpFlow::open(loop_, owner_.udpBatch(), proxy_local, source, *backend_,
                            first_datagram, &error);
  if (!flow) {
    close(CloseReason::StreamDialFailed, "UDP flow from " + source.toString() + ": " + error);
    return;
  }
  spdlog::debug("{} UDP flow {} from {}", prefix(), flows_.size(), source.toString());
  if (server_report_) {
    server_report_->addConnection(proto::ConnectionView::Kind::Data, flow->clientFd(),
                                  flow->serverFd());
  }
  flows_.push_back(std::move(flow));
  if (static_cast<int>(flows_.size()) == params_->totalStreams()) {
    creating_streams_ = false;
    stream_setup_deadline_.disarm();
  }
}

void Session::onRoleDeadline() {
  if (closed_) {
    return;
  }
  if (params_ && params_->transport == proto::Transport::Udp) {
    if (creating_streams_) {
      close(CloseReason::StreamSetupTimeout,
            fmt::format("{} of {} UDP flows within {} ms", flows_.size(), params_->totalStreams(),
                        settings_.timeouts.stream_setup_ms));
    }
    return;
  }
  if (pairing_ && !pairing_->settleByGuess()) {
    close(CloseReason::StreamSetupTimeout,
          fmt::format("{} of {} client and {} of {} backend data connections within {} ms",
                      pairing_->clientStreams(), params_->totalStreams(), pairing_->serverStreams(),
                      params_->totalStreams(), settings_.timeouts.stream_setup_ms));
  }
}

void Session::drainUploadsBeforeTestEnd() {
  // On a direct path the client's last test bytes are in the server's socket before TEST_END
  // is, and the server counts them. Through the proxy they could still sit in a pipe when
  // TEST_END overtakes them, so TEST_END waits until every upload relay has delivered.
  // Once per test: nothing the client sends may restart the drain or push its deadline back
  // (issue 9; the codec refuses a second TEST_END as well).
  if (drain_started_) {
    return;
  }
  drain_started_ = true;
  std::vector<StreamRelay*> uploads;
  for (const auto& relay : relays_) {
    if (relay->flow() == roles::Flow::Upload) {
      uploads.push_back(relay.get());
    }
  }
  if (uploads.empty() || !control_) {
    return;
  }
  control_->holdClientToServer([this](std::size_t held) {
    close(CloseReason::ProtocolError,
          fmt::format("client sent {} bytes while its TEST_END was held (cap {})", held,
                      ControlRelay::kMaxHeldBytes));
  });
  uploads_draining_ = static_cast<int>(uploads.size());
  drain_deadline_.armMs(kDrainDeadlineMs);
  const auto started = std::chrono::steady_clock::now();
  for (StreamRelay* relay : uploads) {
    relay->drainUpload([this, relay, started, before = relay->bytesFromClient()] {
      // For diagnosis: how long the last bytes took and how many arrived after TEST_END.
      spdlog::debug("{} stream {} upload drained in {} ms, {} bytes after the client's TEST_END",
                    prefix(), relay->index(),
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count(),
                    relay->bytesFromClient() - before);
      onUploadDrained();
    });
  }
}

void Session::onUploadDrained() {
  if (uploads_draining_ > 0 && --uploads_draining_ == 0) {
    drain_deadline_.disarm();
    if (control_ && !closed_) {
      control_->releaseClientToServer();
    }
  }
}

void Session::onIdleTick() {
  if (closed_) {
    return;
  }
  const std::uint64_t total = totalBytes();
  idle_ms_ = total == last_total_bytes_ ? idle_ms_ + kIdleTickMs : 0;
  last_total_bytes_ = total;
  if (idle_ms_ >= settings_.timeouts.idle_ms) {
    close(CloseReason::IdleTimeout, fmt::format("nothing moved for {} ms", idle_ms_));
    return;
  }
  idle_tick_.armMs(kIdleTickMs);
}

std::uint64_t Session::totalBytes() const {
  std::uint64_t total = bytes_up_ + bytes_down_;
  if (control_) {
    total += control_->bytesFromClient() + control_->bytesFromServer();
  }
  for (const auto& relay : relays_) {
    total += relay->bytesFromClient() + relay->bytesFromServer();
  }
  for (const auto& flow : flows_) {
    total += flow->bytesFromClient() + flow->bytesFromServer();
  }
  return total;
}

void Session::rejectStream(net::UniqueFd fd, const net::Address& peer, const std::string& why) {
  ++rejected_streams_;
  // The answer the iperf3 server itself gives a data connection it does not want.
  (void)::send(fd.get(), &kAccessDeniedByte, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  spdlog::warn("{} refused data connection from {}: {}", prefix(), peer.toString(), why);
}

void Session::sendServerError(std::int32_t i_errno, std::int32_t sys_errno) {
  const std::vector<std::uint8_t> message = proto::encodeServerError(i_errno, sys_errno);
  if (control_) {
    control_->sendToClientNow(message);
  } else if (client_control_) {
    (void)::send(client_control_.get(), message.data(), message.size(),
                 MSG_NOSIGNAL | MSG_DONTWAIT);
  }
}

// ---- End of the test --------------------------------------------------------------------------

void Session::close(CloseReason reason, const std::string& detail) {
  if (closed_) {
    return;
  }
  closed_ = true;
  reason_ = reason;
  reason_detail_ = detail;
  if (control_) {
    control_->stop();
  }
  if (pairing_) {
    pairing_->stop();
  }
  for (ev::Timer* timer :
       {&backend_retry_, &backend_deadline_, &stream_setup_deadline_, &role_deadline_, &end_linger_,
        &idle_tick_, &test_deadline_, &drain_deadline_}) {
    timer->disarm();
  }
  if (backend_connect_event_) {
    backend_connect_event_->disable();
  }
  for (const auto& relay : relays_) {
    bytes_up_ += relay->bytesFromClient();
    bytes_down_ += relay->bytesFromServer();
  }
  for (const auto& flow : flows_) {
    bytes_up_ += flow->bytesFromClient();
    bytes_down_ += flow->bytesFromServer();
    udp_dropped_ += flow->dropped();
  }
  logSummary();
  // Sockets close when the owner destroys this session, after the current callback returns.
  owner_.onSessionClosed(*this);
}

void Session::logSummary() {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  const std::string shape =
      params_ ? fmt::format("{} {} streams={}", proto::transportName(params_->transport),
                            proto::testModeName(params_->mode), params_->streams_per_direction)
              : std::string("unknown");
  const int repaired = pairing_ ? pairing_->repairedRoles() : 0;
  const int misordered = pairing_ ? pairing_->misorderedArrivals() : 0;
  const auto level = reason_ == CloseReason::Completed || reason_ == CloseReason::ServerBusy
                         ? spdlog::level::info
                         : spdlog::level::warn;
  spdlog::log(level,
              "{} test ended: client={} mode={} up_bytes={} down_bytes={} duration={:.2f}s "
              "reason={}{}{} roles_repaired={} out_of_order={}{}{}{}",
              prefix(), client_address_.toString(), shape, bytes_up_, bytes_down_, seconds,
              closeReasonName(reason_), reason_detail_.empty() ? "" : ": ", reason_detail_,
              repaired, misordered,
              pairing_ && pairing_->rolesGuessed() ? " roles_guessed=yes" : "",
              pairing_ && pairing_->backendRoleMismatch() ? " backend_role_mismatch=yes" : "",
              udp_dropped_ > 0 ? fmt::format(" udp_dropped={}", udp_dropped_) : "");
}

}  // namespace iperf3proxy::proxy
