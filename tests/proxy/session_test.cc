// Component test: one Session (one iperf3 test) with a real event loop and real loopback
// sockets. A recording SessionHost stands in for the worker and the front (the seam a session
// reports through); a scripted iperf3 server (a loopback listener the test drives step by step)
// and a scripted client play the test, on the test's thread between turns of the loop.
//
// Covered: the role deadline (roles settled by source-port order, logged as guessed), the
// stream-setup deadline (a missing data connection ends the test), a backend that cannot take
// the test (refused, silent, busy) reported to the host before the client saw a byte, the UDP
// setup turn (the server's CREATE_STREAMS held until granted), and close(), after which
// nothing of the test runs: no host call, no log line, no byte moved.

#include "proxy/session.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "ev/io_event.h"
#include "log_capture.h"
#include "loopback.h"
#include "net/datagram_batch.h"
#include "proto/wire.h"
#include "proxy/pipe_pool.h"
#include "proxy/traffic_counters.h"
#include "scripted_peers.h"

namespace iperf3proxy::proxy {
namespace {

using net::UniqueFd;
using testing::Bytes;
using testing::bytesOf;
using testing::bytesWaiting;
using testing::closedByPeer;
using testing::concat;
using testing::runFor;
using testing::runUntil;
using testing::sendAll;
using testing::state;

constexpr std::string_view kBidirP1 = R"({"tcp":true,"parallel":1,"bidirectional":true,"time":30})";
constexpr std::string_view kForwardP1 = R"({"tcp":true,"parallel":1,"time":30})";
constexpr std::string_view kForwardP2 = R"({"tcp":true,"parallel":2,"time":30})";
constexpr std::string_view kUdpP1 = R"({"udp":true,"parallel":1,"time":30,"len":1400})";

// The worker's side of a session, recorded: every call in order, and whether any came after
// the session had ended.
class RecordingHost : public SessionHost {
 public:
  explicit RecordingHost(ev::EventLoop& loop) : loop_(loop) {}

  void backendFault(const proto::Cookie&, pool::BackendFault fault) override {
    note("backendFault");
    faults.push_back(fault);
  }

  void requestUdpSetup(const proto::Cookie&, const std::string& client_host) override {
    note("requestUdpSetup");
    udp_requests.push_back(client_host);
  }

  void testFinishing(const proto::Cookie&) override { note("testFinishing"); }

  void udpSetupDone(const proto::Cookie&) override { note("udpSetupDone"); }

  void sessionEnded(const proto::Cookie&, const TestSummary& s, bool broke) override {
    note("sessionEnded");
    summary = s;
    backend_broke = broke;
    if (keep_closed_session) {
      // Kept with its sockets open: close() alone must have stopped everything.
      closed_session = std::move(session);
      return;
    }
    // As the worker does: the session is destroyed once the current callback has returned,
    // which closes every socket of the test.
    loop_.deferredDelete(std::move(session));
  }

  // A metrics report, not a request: counted, not kept in `calls`.
  void testRunning(std::chrono::duration<double>) override { ++tests_running; }

  LoopDatagramIo udpIo() override { return {batch, nullptr, nullptr}; }

  TrafficCounters& traffic() override { return traffic_counters; }

  std::shared_ptr<PipePool> pipePool() override { return pipes; }

  bool ended() const { return summary.has_value(); }

  std::unique_ptr<Session> session;
  bool keep_closed_session = false;
  std::unique_ptr<Session> closed_session;
  std::vector<std::string> calls;
  std::vector<std::string> after_end;  // calls that came after sessionEnded
  std::vector<pool::BackendFault> faults;
  std::vector<std::string> udp_requests;
  std::optional<TestSummary> summary;
  bool backend_broke = false;
  net::DatagramBatch batch;
  TrafficCounters traffic_counters;
  std::shared_ptr<PipePool> pipes = std::make_shared<PipePool>(DataPath{}.pipe_size);
  int tests_running = 0;

 private:
  void note(const std::string& what) {
    if (summary) {
      after_end.push_back(what);
    }
    calls.push_back(what);
  }

  ev::EventLoop& loop_;
};

class SessionTest : public ::testing::Test {
 protected:
  SessionTest() : host_(loop_) {
    settings_.timeouts.backend_connect_ms = 3000;
    settings_.timeouts.stream_setup_ms = 5000;
    settings_.timeouts.role_settle_ms = 3000;
  }

  void TearDown() override { EXPECT_TRUE(host_.after_end.empty()) << host_.after_end.front(); }

  pool::Lease leaseOf(const net::Address& address, const std::string& name = "backend-1") {
    pool::Lease lease;
    lease.backend = ++next_backend_;
    lease.name = name;
    lease.address = address;
    return lease;
  }

  // A new test: the client's control connection (its cookie read by the front) goes to a new
  // session, with a backend leased or none yet.
  void startSession(std::optional<pool::Lease> lease) {
    auto [outer, inner] = testing::tcpPair();
    client_ = std::move(outer);
    const auto peer = net::peerAddress(inner.get());
    ASSERT_TRUE(peer);
    host_.session =
        std::make_unique<Session>(loop_, settings_, host_, testing::testCookie(), std::move(inner),
                                  *peer, std::chrono::steady_clock::now());
    session_ = host_.session.get();
    session_->start(std::move(lease));
  }

  Bytes receive(const UniqueFd& fd, std::size_t size) {
    return testing::receive(loop_, fd.get(), size);
  }

  // The scripted server takes the control connection and the cookie, answers PARAM_EXCHANGE
  // (which must reach the client), and gets the client's parameters.
  void negotiate(std::string_view params_json) {
    server_control_ = server_.accept(loop_);
    EXPECT_EQ(receive(server_control_, proto::kCookieSize), testing::cookieBytes());
    sendAll(server_control_.get(), state(proto::State::ParamExchange));
    EXPECT_EQ(receive(client_, 1), state(proto::State::ParamExchange));
    const Bytes params = proto::encodeJsonMessage(params_json);
    sendAll(client_.get(), params);
    EXPECT_EQ(receive(server_control_, params.size()), params);
  }

  void createStreams() {
    sendAll(server_control_.get(), state(proto::State::CreateStreams));
    EXPECT_EQ(receive(client_, 1), state(proto::State::CreateStreams));
  }

  // A client data connection from `source_port`, handed over as the front does (cookie read).
  UniqueFd attachClientStream(std::uint16_t source_port) {
    auto [outer, inner] = testing::tcpPair();
    session_->attachStream(std::move(inner), testing::loopbackAddress(source_port));
    return std::move(outer);
  }

  // The server accepts the next data connection the proxy dialled, and reads its cookie.
  UniqueFd acceptServerStream() {
    UniqueFd fd = server_.accept(loop_);
    EXPECT_EQ(receive(fd, proto::kCookieSize), testing::cookieBytes());
    return fd;
  }

  void startRunning() {
    const Bytes running =
        concat({state(proto::State::TestStart), state(proto::State::TestRunning)});
    sendAll(server_control_.get(), running);
    EXPECT_EQ(receive(client_, running.size()), running);
  }

  // The end of a test from the client's TEST_END: both results, DISPLAY_RESULTS, IPERF_DONE,
  // both control legs closed.
  void playToEnd() {
    sendAll(client_.get(), state(proto::State::TestEnd));
    EXPECT_EQ(receive(server_control_, 1), state(proto::State::TestEnd));
    sendAll(server_control_.get(), state(proto::State::ExchangeResults));
    EXPECT_EQ(receive(client_, 1), state(proto::State::ExchangeResults));
    const Bytes client_results = proto::encodeJsonMessage(R"({"from":"client"})");
    sendAll(client_.get(), client_results);
    EXPECT_EQ(receive(server_control_, client_results.size()), client_results);
    const Bytes server_results = concat(
        {proto::encodeJsonMessage(R"({"from":"server"})"), state(proto::State::DisplayResults)});
    sendAll(server_control_.get(), server_results);
    EXPECT_EQ(receive(client_, server_results.size()), server_results);
    sendAll(client_.get(), state(proto::State::IperfDone));
    ::shutdown(client_.get(), SHUT_WR);
    EXPECT_EQ(receive(server_control_, 1), state(proto::State::IperfDone));
    ::shutdown(server_control_.get(), SHUT_WR);
    EXPECT_TRUE(runUntil(loop_, [this] { return host_.ended(); }));
  }

  ev::EventLoop loop_;  // first: destroyed last
  ProxySettings settings_;
  RecordingHost host_;
  testing::TestListener server_;
  Session* session_ = nullptr;  // owned by host_ until it ends
  UniqueFd client_;             // the scripted client's control connection
  UniqueFd server_control_;     // the scripted server's control connection
  pool::BackendId next_backend_ = 0;
};

// ---- Deadlines ------------------------------------------------------------------------------

TEST_F(SessionTest, RoleDeadlineSettlesTheRolesBySourcePortOrder) {
  settings_.timeouts.role_settle_ms = 200;
  testing::LogCapture log;
  startSession(leaseOf(server_.address()));
  negotiate(kBidirP1);
  createStreams();
  // A --bidir -P 1 client opens its sending stream first (the lower source port). Neither
  // stream sends before the deadline: nothing shows the client's roles.
  UniqueFd sender = attachClientStream(40000);
  UniqueFd receiver = attachClientStream(40001);
  UniqueFd server_receiver = acceptServerStream();  // accepted first: receives at the server
  UniqueFd server_sender = acceptServerStream();
  startRunning();
  ASSERT_TRUE(runUntil(loop_, [&] {
    return !log.matching("pairing the rest by source-port order", spdlog::level::warn).empty();
  }));
  // Paired as guessed: the lower port's bytes reach the server's receiving stream, and the
  // server's sending stream reaches the higher port.
  testing::sendText(sender.get(), "up");
  EXPECT_EQ(receive(server_receiver, 2), bytesOf("up"));
  testing::sendText(server_sender.get(), "down");
  EXPECT_EQ(receive(receiver, 4), bytesOf("down"));
  playToEnd();
  ASSERT_TRUE(host_.summary);
  EXPECT_EQ(host_.summary->reason, CloseReason::Completed) << host_.summary->detail;
  EXPECT_TRUE(host_.summary->roles_guessed);
  EXPECT_EQ(host_.summary->bytes_up, 2U);
  EXPECT_EQ(host_.summary->bytes_down, 4U);
  const std::string line = formatTestEnded(*host_.summary);
  EXPECT_NE(line.find(" roles_guessed=yes"), std::string::npos) << line;
  EXPECT_EQ(log.matching(line).size(), 1U);
  EXPECT_EQ(host_.calls, (std::vector<std::string>{"testFinishing", "sessionEnded"}));
}

TEST_F(SessionTest, AMissingDataConnectionEndsTheTestAtTheStreamSetupDeadline) {
  settings_.timeouts.stream_setup_ms = 300;
  startSession(leaseOf(server_.address()));
  negotiate(kForwardP2);
  createStreams();
  UniqueFd only = attachClientStream(40000);  // the second one never comes
  UniqueFd server_stream = acceptServerStream();
  ASSERT_TRUE(runUntil(loop_, [this] { return host_.ended(); }));
  EXPECT_EQ(host_.summary->reason, CloseReason::StreamSetupTimeout);
  EXPECT_EQ(host_.summary->detail,
            "1 of 2 client and 1 of 2 backend data connections within 300 ms");
  EXPECT_FALSE(host_.backend_broke);  // the client's fault, not the server's
  // Every connection of the test closes with it.
  EXPECT_TRUE(runUntil(loop_, [&] {
    return closedByPeer(client_.get()) && closedByPeer(server_control_.get()) &&
           closedByPeer(only.get()) && closedByPeer(server_stream.get());
  }));
}

// ---- A backend that cannot take the test ----------------------------------------------------

enum class BadBackend { Refused, Silent, Busy };

class SessionBackendFaultTest : public SessionTest,
                                public ::testing::WithParamInterface<BadBackend> {};

TEST_P(SessionBackendFaultTest, IsReportedToTheHostBeforeTheClientSeesAByte) {
  settings_.timeouts.backend_connect_ms = 300;
  testing::TestListener bad;  // listens, but nobody accepts (silent), or answers busy
  std::optional<pool::Lease> lease;
  pool::BackendFault expected = pool::BackendFault::Refused;
  switch (GetParam()) {
    case BadBackend::Refused:
      lease = leaseOf(testing::closedLoopbackPort(), "bad");
      break;
    case BadBackend::Silent:
      lease = leaseOf(bad.address(), "bad");
      expected = pool::BackendFault::Silent;
      break;
    case BadBackend::Busy:
      lease = leaseOf(bad.address(), "bad");
      expected = pool::BackendFault::Busy;
      break;
  }
  startSession(std::move(lease));
  UniqueFd bad_control;
  if (GetParam() == BadBackend::Busy) {
    // What iperf3 -s says to a second client while it runs a test.
    bad_control = bad.accept(loop_);
    EXPECT_EQ(receive(bad_control, proto::kCookieSize), testing::cookieBytes());
    sendAll(bad_control.get(), state(proto::State::AccessDenied));
  }
  ASSERT_TRUE(runUntil(loop_, [this] { return !host_.faults.empty(); }));
  EXPECT_EQ(host_.faults, std::vector<pool::BackendFault>{expected});
  runFor(loop_, 20);
  EXPECT_EQ(bytesWaiting(client_.get()), 0);  // not a byte of the bad backend's
  EXPECT_FALSE(closedByPeer(client_.get()));
  EXPECT_FALSE(host_.ended());
  // Another backend takes the test; the client's first byte is its PARAM_EXCHANGE.
  session_->onBackendGranted(leaseOf(server_.address(), "good"));
  negotiate(kForwardP1);
  session_->close(CloseReason::Shutdown);
  ASSERT_TRUE(host_.summary);
  EXPECT_EQ(host_.summary->backend, "good");
  EXPECT_EQ(host_.summary->backend_attempts, 1);
  EXPECT_EQ(host_.calls, (std::vector<std::string>{"backendFault", "sessionEnded"}));
}

std::string badBackendName(const ::testing::TestParamInfo<BadBackend>& param) {
  switch (param.param) {
    case BadBackend::Refused:
      return "Refused";
    case BadBackend::Silent:
      return "Silent";
    case BadBackend::Busy:
      return "Busy";
  }
  return "Unknown";
}

INSTANTIATE_TEST_SUITE_P(Faults,
                         SessionBackendFaultTest,
                         ::testing::Values(BadBackend::Refused,
                                           BadBackend::Silent,
                                           BadBackend::Busy),
                         badBackendName);

// ---- UDP setup turns ------------------------------------------------------------------------

TEST_F(SessionTest, UdpCreateStreamsWaitsForTheTurnAndTheTurnGoesBackAtTheEnd) {
  settings_.timeouts.stream_setup_ms = 1000;
  startSession(leaseOf(server_.address()));
  negotiate(kUdpP1);
  sendAll(server_control_.get(), state(proto::State::CreateStreams));
  ASSERT_TRUE(runUntil(loop_, [this] { return !host_.udp_requests.empty(); }));
  EXPECT_EQ(host_.udp_requests, std::vector<std::string>{"127.0.0.1"});
  // Held: the client may not set up its flows while another test from its address does.
  runFor(loop_, 100);
  EXPECT_EQ(bytesWaiting(client_.get()), 0);
  session_->onUdpSetupGranted();
  EXPECT_EQ(receive(client_, 1), state(proto::State::CreateStreams));
  // No flow comes: the setup deadline ends the test, and the turn goes back before the end.
  ASSERT_TRUE(runUntil(loop_, [this] { return host_.ended(); }));
  EXPECT_EQ(host_.summary->reason, CloseReason::StreamSetupTimeout);
  EXPECT_EQ(host_.summary->detail, "0 of 1 UDP flows within 1000 ms");
  EXPECT_EQ(host_.calls,
            (std::vector<std::string>{"requestUdpSetup", "udpSetupDone", "sessionEnded"}));
}

TEST_F(SessionTest, AUdpTestClosedWhileWaitingForItsTurnGivesItBack) {
  startSession(leaseOf(server_.address()));
  negotiate(kUdpP1);
  sendAll(server_control_.get(), state(proto::State::CreateStreams));
  ASSERT_TRUE(runUntil(loop_, [this] { return !host_.udp_requests.empty(); }));
  session_->close(CloseReason::Shutdown);
  EXPECT_EQ(host_.calls,
            (std::vector<std::string>{"requestUdpSetup", "udpSetupDone", "sessionEnded"}));
  session_->onUdpSetupGranted();  // a grant already on its way when the test ended
  runFor(loop_, 20);
  EXPECT_EQ(bytesWaiting(client_.get()), 0);
}

// ---- close() --------------------------------------------------------------------------------

TEST_F(SessionTest, CloseStopsEveryEventAtOnceSoNoByteMovesAfterTheSummary) {
  testing::LogCapture log;
  // The host keeps the closed session, sockets and all, for a while: close() itself must have
  // stopped every event, not the deletion that usually follows it.
  host_.keep_closed_session = true;
  startSession(leaseOf(server_.address()));
  negotiate(kForwardP1);
  createStreams();
  UniqueFd upload = attachClientStream(40000);
  UniqueFd server_stream = acceptServerStream();
  startRunning();
  ASSERT_EQ(::fcntl(upload.get(), F_SETFL, O_NONBLOCK), 0);
  // The client sends as fast as it can and the server reads all it gets, both from the loop;
  // once data flows, the session is closed from a loop callback, mid-flow.
  std::uint64_t server_got = 0;
  bool server_eof = false;
  bool client_broken = false;
  std::vector<std::uint8_t> chunk(64 * 1024, 'x');
  ev::Timer traffic(loop_, [&] {
    while (!client_broken) {
      const ssize_t n = ::send(upload.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (n < 0) {
        client_broken = errno != EAGAIN;
        break;
      }
    }
    std::uint8_t buffer[64 * 1024];
    while (!server_eof) {
      const ssize_t n = ::recv(server_stream.get(), buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n > 0) {
        server_got += static_cast<std::uint64_t>(n);
      } else {
        server_eof = n == 0 || (errno != EAGAIN && errno != EINTR);
        break;
      }
    }
    traffic.armMs(1);
  });
  traffic.armMs(1);
  ASSERT_TRUE(runUntil(loop_, [&] { return server_got >= (8U << 20); }));
  ev::Timer closer(loop_, [this] { session_->close(CloseReason::Shutdown); });
  closer.armMs(0);
  ASSERT_TRUE(runUntil(loop_, [this] { return host_.ended(); }));
  const std::size_t lines_at_end = log.lines().size();
  // The client goes on sending and the server reading while the closed session lives on.
  runFor(loop_, 200);
  EXPECT_EQ(server_got, host_.summary->bytes_up) << "bytes moved after the summary";
  EXPECT_FALSE(server_eof);
  // Its deletion closes the test's sockets: the server reads to the end, the client breaks.
  host_.closed_session.reset();
  ASSERT_TRUE(runUntil(loop_, [&] { return server_eof && client_broken; }));
  traffic.disarm();
  EXPECT_EQ(server_got, host_.summary->bytes_up);
  EXPECT_GT(host_.summary->bytes_up, 0U);
  // Nothing of the test logged anything after its summary line.
  const auto lines = log.lines();
  ASSERT_GE(lines.size(), lines_at_end);
  EXPECT_NE(lines[lines_at_end - 1].text.find("test ended"), std::string::npos)
      << lines[lines_at_end - 1].text;
  for (std::size_t i = lines_at_end; i < lines.size(); ++i) {
    ADD_FAILURE() << "logged after the summary: " << lines[i].text;
  }
  EXPECT_EQ(host_.calls, std::vector<std::string>{"sessionEnded"});
}

TEST_F(SessionTest, CloseIsIdempotentAndLaterRequestsAreIgnored) {
  startSession(leaseOf(server_.address()));
  negotiate(kForwardP1);
  session_->close(CloseReason::Shutdown);
  session_->close(CloseReason::IdleTimeout);
  auto [outer, inner] = testing::tcpPair();
  session_->attachStream(std::move(inner), testing::loopbackAddress(40000));
  session_->onBackendGranted(leaseOf(server_.address(), "late"));
  runFor(loop_, 20);
  EXPECT_EQ(host_.summary->reason, CloseReason::Shutdown);
  EXPECT_EQ(host_.calls, std::vector<std::string>{"sessionEnded"});
  EXPECT_TRUE(runUntil(loop_, [&] { return closedByPeer(outer.get()); }));
  EXPECT_FALSE(server_.acceptNow().valid());  // nothing dialled the backend for it
}

}  // namespace
}  // namespace iperf3proxy::proxy
