// Component test: PendingConn, a connection that has not shown its cookie yet, with a real
// event loop. The front evicts the oldest pending connection when too many wait (and stops them
// all at shutdown) from inside other callbacks of the same turn of the loop: an evicted
// connection whose cookie had already arrived must not become a test afterwards.

#include "proxy/pending_conn.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "loopback.h"
#include "scripted_peers.h"

namespace iperf3proxy::proxy {
namespace {

using net::UniqueFd;
using testing::runFor;
using testing::runUntil;

struct Outcome {
  int index;
  std::string what;  // "cookie" or the rejection
};

class PendingConnTest : public ::testing::Test {
 protected:
  // A pending connection whose peer is `*peer` (the test's end of it).
  PendingConn& add(UniqueFd* peer, long deadline_ms = testing::kWaitMs) {
    auto [outer, inner] = testing::tcpPair();
    *peer = std::move(outer);
    const int index = static_cast<int>(pending_.size());
    pending_.push_back(std::make_unique<PendingConn>(
        loop_, std::move(inner),
        testing::loopbackAddress(static_cast<std::uint16_t>(40000 + index)), deadline_ms,
        PendingConn::Callbacks{
            [this, index](PendingConn&, proto::Cookie, UniqueFd) {
              outcomes_.push_back({index, "cookie"});
              onOutcome(index);
            },
            [this, index](PendingConn&, PendingConn::Rejection, const std::string& why) {
              outcomes_.push_back({index, why});
              onOutcome(index);
            }}));
    return *pending_.back();
  }

  ev::EventLoop loop_;
  std::vector<std::unique_ptr<PendingConn>> pending_;
  std::vector<Outcome> outcomes_;
  std::function<void(int)> onOutcome = [](int) {
  };
};

TEST_F(PendingConnTest, AConnectionStoppedInTheTurnItsCookieArrivedNeverDeliversIt) {
  // Both cookies are complete before the loop runs, so both connections are ready in the same
  // turn. Whichever is handled first stops the other, as the front's eviction does: the other's
  // readiness, already noticed by the loop, must be dropped.
  UniqueFd a, b;
  add(&a);
  add(&b);
  onOutcome = [this](int index) {
    pending_[index == 0 ? 1U : 0U]->stop();
  };
  testing::sendAll(a.get(), testing::cookieBytes());
  testing::sendAll(b.get(), testing::cookieBytes());
  ASSERT_TRUE(runUntil(loop_, [this] { return !outcomes_.empty(); }));
  runFor(loop_, 50);
  ASSERT_EQ(outcomes_.size(), 1U);
  EXPECT_EQ(outcomes_[0].what, "cookie");
}

TEST_F(PendingConnTest, AStoppedConnectionReportsNothingLater) {
  UniqueFd peer;
  PendingConn& conn = add(&peer, /*deadline_ms=*/50);
  conn.stop();
  testing::sendAll(peer.get(), testing::cookieBytes());
  runFor(loop_, 150);  // past the cookie deadline too
  EXPECT_TRUE(outcomes_.empty());
}

TEST_F(PendingConnTest, ExactlyOneOutcomeEach) {
  UniqueFd cookie, garbage, closed, silent;
  add(&cookie);
  add(&garbage);
  add(&closed);
  add(&silent, /*deadline_ms=*/100);
  testing::sendAll(cookie.get(), testing::cookieBytes());
  testing::sendText(garbage.get(), "GET / HTTP/1.0\r\n\r\n");
  closed.reset();
  ASSERT_TRUE(runUntil(loop_, [this] { return outcomes_.size() == 4; }));
  runFor(loop_, 50);
  ASSERT_EQ(outcomes_.size(), 4U);
  std::vector<std::string> by_index(4);
  for (const Outcome& o : outcomes_) {
    EXPECT_TRUE(by_index[static_cast<std::size_t>(o.index)].empty()) << "twice: " << o.index;
    by_index[static_cast<std::size_t>(o.index)] = o.what;
  }
  EXPECT_EQ(by_index[0], "cookie");
  EXPECT_EQ(by_index[1], "not an iperf3 cookie (byte 0 is 0x47)");
  EXPECT_EQ(by_index[2], "closed after 0 bytes, before a complete cookie");
  EXPECT_EQ(by_index[3], "no complete cookie within the deadline (0 of 37 bytes)");
}

}  // namespace
}  // namespace iperf3proxy::proxy
