// Component test: StreamDialer with a real event loop against a loopback listener in the role
// of the iperf3 server. The server gives roles in its accept order, so the dialer must open one
// connection at a time and report each only once the server holds it, cookie and all: what the
// tests check is that the server's accept queue says so at every report. A listener whose
// accept queue is full holds a dial at its first step (the SYN is dropped until there is room),
// which shows that nothing else is dialled meanwhile. (A connection that is connected at the
// proxy but not yet at the server, the cookie unacknowledged, needs packet filtering: the race
// testbed does that on the proxy-to-server hop, integration/test_race.py.)

#include "proxy/stream_dialer.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "net/socket_ops.h"
#include "scripted_peers.h"

namespace iperf3proxy::proxy {
namespace {

using net::UniqueFd;
using testing::bytesWaiting;
using testing::runFor;
using testing::runUntil;
using testing::TestListener;

// What the server's side looked like at the moment the dialer reported a connection.
struct Report {
  std::uint16_t local_port = 0;       // the reported connection's source port
  std::optional<int> unacknowledged;  // its bytes the server's TCP had not acknowledged
  bool accepted = false;              // the server could accept a connection at once
  std::uint16_t accepted_peer = 0;    // ... from this source port
  int cookie_bytes = 0;               // ... with this much waiting to be read
  bool another_queued = false;        // a second connection was queued behind it
};

class StreamDialerTest : public ::testing::Test {
 protected:
  std::unique_ptr<StreamDialer> dialer(const net::Address& to, long deadline_ms = 5000) {
    return std::make_unique<StreamDialer>(
        loop_, to, testing::testCookie(), deadline_ms, net::StreamSocketOptions{},
        StreamDialer::Callbacks{[this](UniqueFd fd) { onReady(std::move(fd)); },
                                [this](int error) {
                                  failures_.push_back(error);
                                }});
  }

  void onReady(UniqueFd fd) {
    Report report;
    report.local_port = testing::localPort(fd.get());
    report.unacknowledged = net::unacknowledgedBytes(fd.get());
    if (listener_) {
      // The server accepts now, as iperf3 would at this moment: the connection it gets must be
      // the one reported, its cookie already there, and nothing may be queued behind it.
      UniqueFd accepted = listener_->acceptNow();
      report.accepted = accepted.valid();
      if (accepted) {
        report.accepted_peer = testing::peerPort(accepted.get());
        report.cookie_bytes = bytesWaiting(accepted.get());
        report.another_queued = listener_->acceptNow().valid();
        accepted_.push_back(std::move(accepted));
      }
    }
    reports_.push_back(report);
    ready_.push_back(std::move(fd));
  }

  void expectReportedAsQueuedAtTheServer() {
    for (std::size_t i = 0; i < reports_.size(); ++i) {
      const Report& r = reports_[i];
      SCOPED_TRACE("report " + std::to_string(i));
      EXPECT_EQ(r.unacknowledged, 0);
      EXPECT_TRUE(r.accepted);
      EXPECT_EQ(r.accepted_peer, r.local_port);
      EXPECT_EQ(r.cookie_bytes, static_cast<int>(proto::kCookieSize));
      EXPECT_FALSE(r.another_queued);
    }
  }

  ev::EventLoop loop_;
  TestListener* listener_ = nullptr;  // accepts at each report, if set
  std::vector<Report> reports_;
  std::vector<UniqueFd> ready_;
  std::vector<UniqueFd> accepted_;
  std::vector<int> failures_;
};

TEST_F(StreamDialerTest, ReportsEachConnectionOnlyOnceTheServerHoldsItWithItsCookie) {
  TestListener server;
  listener_ = &server;
  auto d = dialer(server.address());
  for (int i = 0; i < 4; ++i) {
    d->dialOne();
  }
  ASSERT_TRUE(runUntil(loop_, [this] { return reports_.size() == 4; }));
  EXPECT_TRUE(failures_.empty());
  EXPECT_EQ(d->dialed(), 4);
  expectReportedAsQueuedAtTheServer();
  // The cookie the server reads is the test's, byte for byte.
  for (const UniqueFd& fd : accepted_) {
    EXPECT_EQ(testing::receive(loop_, fd.get(), proto::kCookieSize), testing::cookieBytes());
  }
}

TEST_F(StreamDialerTest, DialsTheNextOnlyAfterTheServerQueuedThePrevious) {
  // An accept queue with room for one, taken: the server's TCP drops the dialer's SYN until the
  // test makes room, and retransmits come a second apart.
  TestListener server(/*backlog=*/0);
  UniqueFd filler = testing::tcpClientTo(server.address());
  auto d = dialer(server.address());
  for (int i = 0; i < 3; ++i) {
    d->dialOne();
  }
  runFor(loop_, 300);
  // One connection attempt, no more: the dialer waits for it before opening the next.
  EXPECT_EQ(testing::tcpSocketsInState(server.port(), testing::kTcpSynSent), 1);
  EXPECT_TRUE(reports_.empty());
  EXPECT_TRUE(failures_.empty());
  // Room again: the server takes the test's filler; from now on it accepts at every report.
  UniqueFd taken = server.acceptNow();
  ASSERT_TRUE(taken.valid());
  listener_ = &server;
  ASSERT_TRUE(runUntil(loop_, [this] { return reports_.size() == 3; }));
  EXPECT_TRUE(failures_.empty());
  expectReportedAsQueuedAtTheServer();
  EXPECT_EQ(testing::tcpSocketsInState(server.port(), testing::kTcpSynSent), 0);
}

TEST_F(StreamDialerTest, ARefusedDialFailsOnceAndDialsNothingMore) {
  auto d = dialer(testing::closedLoopbackPort());
  d->dialOne();
  d->dialOne();
  ASSERT_TRUE(runUntil(loop_, [this] { return !failures_.empty(); }));
  EXPECT_EQ(failures_.front(), ECONNREFUSED);
  d->dialOne();  // after a failure: ignored
  runFor(loop_, 50);
  EXPECT_EQ(failures_.size(), 1U);
  EXPECT_TRUE(reports_.empty());
  EXPECT_EQ(d->dialed(), 0);
}

TEST_F(StreamDialerTest, AStalledDialFailsAtTheDeadlineAndLeavesNoConnection) {
  TestListener server(/*backlog=*/0);
  UniqueFd filler = testing::tcpClientTo(server.address());
  auto d = dialer(server.address(), /*deadline_ms=*/200);
  d->dialOne();
  d->dialOne();
  ASSERT_TRUE(runUntil(loop_, [this] { return !failures_.empty(); }));
  EXPECT_EQ(failures_, std::vector<int>{ETIMEDOUT});
  EXPECT_TRUE(reports_.empty());
  // The stalled connection is gone (nothing is left to complete later), and nothing follows.
  EXPECT_EQ(testing::tcpSocketsInState(server.port(), testing::kTcpSynSent), 0);
  runFor(loop_, 50);
  EXPECT_EQ(failures_.size(), 1U);
}

TEST_F(StreamDialerTest, StopAbandonsTheDialInProgressAndTheQueueWithoutACallback) {
  TestListener server(/*backlog=*/0);
  UniqueFd filler = testing::tcpClientTo(server.address());
  auto d = dialer(server.address());
  d->dialOne();
  d->dialOne();
  runFor(loop_, 50);
  ASSERT_EQ(testing::tcpSocketsInState(server.port(), testing::kTcpSynSent), 1);
  d->stop();
  EXPECT_EQ(testing::tcpSocketsInState(server.port(), testing::kTcpSynSent), 0);
  runFor(loop_, 50);
  EXPECT_TRUE(reports_.empty());
  EXPECT_TRUE(failures_.empty());
}

}  // namespace
}  // namespace iperf3proxy::proxy
