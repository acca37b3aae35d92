#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/datagram_batch.h"
#include "net/socket_ops.h"
#include "net/unique_fd.h"
#include "proto/control_codec.h"
#include "proxy/close_reason.h"
#include "proxy/control_relay.h"
#include "proxy/server_report_translation.h"
#include "proxy/settings.h"
#include "proxy/stream_pairing.h"
#include "proxy/stream_relay.h"
#include "proxy/udp_flow.h"

namespace iperf3proxy::proxy {

class Session;

// What a session needs from the object that owns it (the Server).
class SessionOwner {
 public:
  virtual ~SessionOwner() = default;
  virtual std::optional<net::Address> backendAddress() = 0;
  // One batch buffer for every UDP flow (the loop is single-threaded).
  virtual net::DatagramBatch& udpBatch() = 0;
  // Whether another test is still closing its backend control connection (the server re-listens
  // only after that).
  virtual bool backendFinishingTest(const Session& asking) = 0;
  // The session has ended; the owner removes it from its registry and deletes it later.
  virtual void onSessionClosed(Session& session) = 0;
};

// One iperf3 test, identified by its cookie: the control connection, every data connection,
// and the deadlines between them. Everything of a test closes when its session closes.
//
// Life of a session:
//   connecting backend -> relaying control -> (CREATE_STREAMS) pairing data connections
//   -> (TEST_RUNNING) data relayed -> (IPERF_DONE) both control legs close -> closed.
class Session : public ev::DeferredDeletable, private ControlRelayCallbacks {
 public:
  Session(ev::EventLoop& loop,
          const ProxySettings& settings,
          SessionOwner& owner,  // outlives the session
          proto::Cookie cookie,
          net::UniqueFd client,
          net::Address client_address);
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start();

  // A data connection that carried this test's cookie.
  void attachStream(net::UniqueFd fd, const net::Address& peer);

  // UDP streams carry no cookie (protocol §4.4): a new flow belongs to the test that is creating
  // UDP streams for the same client address.
  bool wantsUdpFlowFrom(const net::Address& source) const;
  // A datagram for one of this test's flows that reached the shared UDP listener.
  bool routeUdp(const net::Address& source, std::span<const std::uint8_t> datagram);
  void attachUdpFlow(const net::Address& proxy_local,
                     const net::Address& source,
                     std::span<const std::uint8_t> first_datagram);

  // Ends the session now; idempotent.
  void close(CloseReason reason, const std::string& detail = {});

  // Past IPERF_DONE but the control legs are not closed yet.
  bool finishingWithBackend() const;

  const proto::Cookie& cookie() const { return cookie_; }

  bool closed() const { return closed_; }

  CloseReason closeReason() const { return reason_; }

 private:
  // Backend control connection.
  void connectBackend();
  void onBackendConnectReady();
  void onBackendConnectFailed(int error);
  bool retryBackendBeforeFirstByte();

  // proxy::ControlRelayCallbacks
  void onControlEvent(const proto::ControlEvent& event) override;
  void onControlProtocolError(const proto::CodecFailure& failure) override;
  void onControlError(proto::Side side, int error) override;
  void closeDone();
  void onControlFinished() override;

  void onParams(const proto::ParamsReceived& params);
  void onState(const proto::StateReceived& state);
  void beginStreamCreation();

  // Data connections.
  void startRelay(roles::Flow flow, net::UniqueFd client, net::UniqueFd server);
  void onAllPaired();
  void onRelayDone(StreamRelay& relay, const SplicePump::Completion& completion);
  void onRoleDeadline();
  void drainUploadsBeforeTestEnd();
  void onUploadDrained();
  void onIdleTick();

  void rejectStream(net::UniqueFd fd, const net::Address& peer, const std::string& why);
  void sendServerError(std::int32_t i_errno, std::int32_t sys_errno);
  std::uint64_t totalBytes() const;
  void logSummary();
  std::string prefix() const;

  ev::EventLoop& loop_;
  const ProxySettings& settings_;
  SessionOwner& owner_;
  proto::Cookie cookie_;
  net::Address client_address_;
  std::chrono::steady_clock::time_point started_;

  // Test facts, for routing and for the summary line.
  std::optional<proto::TestParams> params_;
  bool creating_streams_ = false;
  bool running_ = false;
  bool done_ = false;           // IPERF_DONE seen
  bool results_shown_ = false;  // the server's DISPLAY_RESULTS seen
  bool busy_ = false;           // ACCESS_DENIED seen
  std::optional<proto::ServerErrorReceived> server_error_;
  bool closed_ = false;
  CloseReason reason_ = CloseReason::Completed;
  std::string reason_detail_;
  int rejected_streams_ = 0;
  std::uint64_t bytes_up_ = 0;    // client -> server on finished data connections
  std::uint64_t bytes_down_ = 0;  // server -> client on finished data connections
  std::uint64_t last_total_bytes_ = 0;
  long idle_ms_ = 0;
  int uploads_draining_ = 0;
  bool drain_started_ = false;  // the upload drain at TEST_END, at most once per test
  std::uint64_t udp_dropped_ = 0;
  int last_connect_error_ = ETIMEDOUT;
  bool backend_deadline_retry_allowed_ = true;  // one reconnect after an early backend close

  // Connections. Declared before the events and timers that reference them.
  net::UniqueFd client_control_;
  net::UniqueFd backend_connecting_;
  std::optional<net::Address> backend_;
  std::unique_ptr<ev::IoEvent> backend_connect_event_;
  std::unique_ptr<ControlRelay> control_;
  // Only with --get-server-output: the addresses the server's report must show.
  std::unique_ptr<ServerReportTranslation> server_report_;
  std::unique_ptr<StreamPairing> pairing_;  // TCP tests, from CREATE_STREAMS
  std::vector<std::unique_ptr<StreamRelay>> relays_;
  std::vector<std::unique_ptr<UdpFlow>> flows_;

  ev::Timer backend_retry_;
  ev::Timer backend_deadline_;
  ev::Timer stream_setup_deadline_;
  ev::Timer role_deadline_;
  ev::Timer end_linger_;
  ev::Timer idle_tick_;
  ev::Timer test_deadline_;
  ev::Timer drain_deadline_;
};

}  // namespace iperf3proxy::proxy
