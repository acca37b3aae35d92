#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/datagram_batch.h"
#include "net/unique_fd.h"
#include "pool/backend_pool.h"
#include "proto/control_codec.h"
#include "proxy/backend_link.h"
#include "proxy/close_reason.h"
#include "proxy/control_relay.h"
#include "proxy/server_report_translation.h"
#include "proxy/settings.h"
#include "proxy/tcp_streams.h"
#include "proxy/test_report.h"
#include "proxy/traffic_counters.h"
#include "proxy/udp_streams.h"

namespace iperf3proxy::proxy {

// What a session needs from the rest of the proxy (its worker, which passes it on to the
// front). Requests are answered later, through the session's own methods (onBackendGranted,
// onNoBackend, onUdpSetupGranted), never from inside the request.
class SessionHost {
 public:
  virtual ~SessionHost() = default;
  // The leased backend could not take the test: give the lease back, and find another backend.
  virtual void backendFault(const proto::Cookie& test, pool::BackendFault fault) = 0;
  // The server sent CREATE_STREAMS of a UDP test: may the client set up its streams now?
  virtual void requestUdpSetup(const proto::Cookie& test, const std::string& client_host) = 0;
  // The test is past IPERF_DONE: its backend is about to be free.
  virtual void testFinishing(const proto::Cookie& test) = 0;
  // The test reached TEST_RUNNING, `setup` after its control connection was accepted.
  virtual void testRunning(std::chrono::duration<double> setup) = 0;
  // Done setting up UDP streams (or gave up): the next test from that address may go.
  virtual void udpSetupDone(const proto::Cookie& test) = 0;
  // The session has ended; everything it held (its lease, its turn) goes back. The host removes
  // it from its registry and deletes it later.
  virtual void sessionEnded(const proto::Cookie& test,
                            const TestSummary& summary,
                            bool backend_broke) = 0;
  // The receive batch and poll ticker of the UDP flows of this loop.
  virtual LoopDatagramIo udpIo() = 0;
  // Where the session adds the test data it relayed (once a second, and at its end).
  virtual TrafficCounters& traffic() = 0;
  // The pipes for the TCP relays of this loop.
  virtual std::shared_ptr<PipePool> pipePool() = 0;
};

// One iperf3 test, identified by its cookie: the control connection, every data connection,
// and the deadlines between them. Everything of a test closes when its session closes.
//
// Life of a session:
//   waiting for a backend (queued) -> connecting the backend (BackendLink; on a fault, waiting
//   again for another) -> relaying control (ControlRelay) -> (CREATE_STREAMS) data connections
//   (TcpStreams / UdpStreams) -> (TEST_RUNNING) data relayed -> (IPERF_DONE) both control legs
//   close -> closed.
class Session : public ev::DeferredDeletable, private ControlRelayCallbacks {
 public:
  Session(ev::EventLoop& loop,
          const ProxySettings& settings,
          SessionHost& host,  // outlives the session
          proto::Cookie cookie,
          net::UniqueFd client,
          net::Address client_address,
          std::chrono::steady_clock::time_point accepted);
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // With a lease the backend is connected at once; without, the test waits for one (queued),
  // and the client's connection is watched so that a client that leaves is noticed.
  void start(std::optional<pool::Lease> lease);

  // Answers to the host's requests.
  void onBackendGranted(pool::Lease lease);
  void onNoBackend(CloseReason reason, const std::string& detail);
  void onUdpSetupGranted();

  // A data connection that carried this test's cookie.
  void attachStream(net::UniqueFd fd, const net::Address& peer);

  // A datagram from this test's client address that reached the shared UDP port: the first
  // datagram of a new flow (the front checked it is an iperf3 connect message), or one of a
  // flow whose own socket was not connected yet.
  void onDatagram(const net::Address& proxy_local,
                  const net::Address& source,
                  std::span<const std::uint8_t> datagram);

  // Ends the session now; idempotent. Every event of the test stops before this returns.
  void close(CloseReason reason, const std::string& detail = {});

  const proto::Cookie& cookie() const { return cookie_; }

  bool closed() const { return closed_; }

 private:
  // Backend.
  void connectBackend(pool::Lease lease);
  void onBackendFault(pool::BackendFault fault, const std::string& detail);
  void onBackendAnswered(net::UniqueFd fd, std::vector<std::uint8_t> answer);
  void watchClientWhileWaiting();
  void onClientWhileWaiting();

  // proxy::ControlRelayCallbacks
  void onControlEvent(const proto::ControlEvent& event) override;
  void onControlProtocolError(const proto::CodecFailure& failure) override;
  void onControlError(proto::Side side, int error) override;
  void onControlFinished() override;
  void closeDone();

  void onParams(const proto::ParamsReceived& params);
  void onState(const proto::StateReceived& state);
  void beginStreamCreation();
  void onTestEnd();

  // Data connections.
  void onAllPaired();
  void onRoleDeadline();
  void onIdleTick();
  void endUdpSetup();

  void rejectStream(net::UniqueFd fd, const net::Address& peer, const std::string& why);
  void sendToClientNow(std::span<const std::uint8_t> bytes);
  std::uint64_t bytesUp() const;
  std::uint64_t bytesDown() const;
  // Adds what was relayed since the last call to the proxy's traffic counters.
  void countTraffic();
  TestSummary summary() const;
  std::string prefix() const;

  ev::EventLoop& loop_;
  const ProxySettings& settings_;
  SessionHost& host_;
  proto::Cookie cookie_;
  net::Address client_address_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point waiting_since_;
  std::chrono::steady_clock::duration queued_{};

  // Test facts, for routing and for the summary line.
  std::optional<pool::Lease> lease_;
  int backend_faults_ = 0;
  std::string last_fault_;  // the last backend that could not take the test, and why
  std::optional<proto::TestParams> params_;
  bool creating_streams_ = false;
  bool udp_turn_requested_ = false;
  bool running_ = false;
  bool test_end_seen_ = false;
  bool done_ = false;           // IPERF_DONE seen
  bool results_shown_ = false;  // the server's DISPLAY_RESULTS seen
  bool busy_ = false;           // ACCESS_DENIED seen
  std::optional<proto::ServerErrorReceived> server_error_;
  bool closed_ = false;
  CloseReason reason_ = CloseReason::Completed;
  std::string reason_detail_;
  std::uint64_t last_total_bytes_ = 0;
  std::uint64_t counted_up_ = 0;  // test data already added to host_.traffic()
  std::uint64_t counted_down_ = 0;
  long idle_ms_ = 0;

  // Connections. Declared before the events and timers that reference them.
  net::UniqueFd client_control_;  // until the control relay takes it
  std::unique_ptr<ev::IoEvent> client_watch_;
  std::unique_ptr<BackendLink> link_;
  std::unique_ptr<ControlRelay> control_;
  // Only with --get-server-output: the addresses the server's report must show.
  std::unique_ptr<ServerReportTranslation> server_report_;
  std::unique_ptr<TcpStreams> tcp_;  // TCP tests, from CREATE_STREAMS
  std::unique_ptr<UdpStreams> udp_;  // UDP tests, from CREATE_STREAMS

  ev::Timer stream_setup_deadline_;
  ev::Timer role_deadline_;
  ev::Timer end_linger_;
  ev::Timer idle_tick_;
  ev::Timer test_deadline_;
};

}  // namespace iperf3proxy::proxy
