// BackendPool: which backend a new test gets, when it waits, when it is answered "busy", and
// what faults do to a backend. Pure: the time is passed in.

#include "pool/backend_pool.h"

#include <string>
#include <variant>

#include <gtest/gtest.h>

#include "net/address.h"

namespace iperf3proxy::pool {
namespace {

using std::chrono::milliseconds;

proto::Cookie cookie(int n) {
  std::string text(36, 'a');
  text[0] = static_cast<char>('a' + n % 26);
  text[1] = static_cast<char>('a' + n / 26 % 26);
  std::array<std::uint8_t, proto::kCookieSize> bytes{};
  std::copy(text.begin(), text.end(), bytes.begin());
  return *proto::Cookie::parse(bytes);
}

net::Address address(std::uint16_t port) {
  return *net::resolveHost("127.0.0.1", port, nullptr);
}

class BackendPoolTest : public ::testing::Test {
 protected:
  explicit BackendPoolTest(PoolSettings settings = {}) : pool_(settings) {}

  BackendId add(std::uint16_t port) {
    return pool_.add("b" + std::to_string(port), BackendKind::Given, address(port), now_);
  }

  std::optional<BackendId> leased(const proto::Cookie& test) {
    auto answer = pool_.request(test, now_);
    if (auto* lease = std::get_if<Lease>(&answer)) {
      return lease->backend;
    }
    return std::nullopt;
  }

  void advance(milliseconds by) { now_ += by; }

  TimePoint now_ = TimePoint{} + std::chrono::hours(1);
  BackendPool pool_;
};

TEST_F(BackendPoolTest, EachTestGetsABackendOfItsOwnLeastRecentlyUsedFirst) {
  const BackendId a = add(1);
  const BackendId b = add(2);
  const BackendId c = add(3);
  EXPECT_EQ(leased(cookie(1)), a);
  EXPECT_EQ(leased(cookie(2)), b);
  advance(milliseconds(10));
  pool_.release(cookie(1), now_);  // a is now the most recently used
  EXPECT_EQ(leased(cookie(3)), c);
  EXPECT_EQ(leased(cookie(4)), a);
  EXPECT_EQ(pool_.runningTests(), 3U);
}

TEST_F(BackendPoolTest, WithoutAQueueATestBeyondCapacityIsRefusedAtOnce) {
  add(1);
  ASSERT_TRUE(leased(cookie(1)));
  auto answer = pool_.request(cookie(2), now_);
  ASSERT_TRUE(std::holds_alternative<BackendPool::Refused>(answer));
  EXPECT_EQ(std::get<BackendPool::Refused>(answer).why, "every backend is running a test");
  EXPECT_EQ(pool_.queueLength(), 0U);
}

TEST_F(BackendPoolTest, AReleasedLeaseSaysWhenRefusalsAreTheServerRelistening) {
  add(1);
  PoolSettings defaults;
  auto first = std::get<Lease>(pool_.request(cookie(1), now_));
  advance(milliseconds(5000));
  pool_.release(cookie(1), now_);
  auto second = std::get<Lease>(pool_.request(cookie(2), now_));
  EXPECT_EQ(second.refusals_expected_until, now_ + defaults.relisten_grace);
  EXPECT_LT(first.refusals_expected_until, second.refusals_expected_until);
}

class QueuedPoolTest : public BackendPoolTest {
 protected:
  QueuedPoolTest() : BackendPoolTest(queued()) {}

  static PoolSettings queued() {
    PoolSettings settings;
    settings.queue_timeout = milliseconds(5000);
    settings.queue_length = 2;
    return settings;
  }
};

TEST_F(QueuedPoolTest, WaitingTestsGetFreedBackendsFirstComeFirstServed) {
  const BackendId a = add(1);
  ASSERT_EQ(leased(cookie(1)), a);
  EXPECT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(2), now_)));
  EXPECT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(3), now_)));
  // The queue holds two: the fourth is refused.
  EXPECT_TRUE(std::holds_alternative<BackendPool::Refused>(pool_.request(cookie(4), now_)));
  advance(milliseconds(100));
  pool_.release(cookie(1), now_);
  auto changes = pool_.poll(now_);
  ASSERT_EQ(changes.granted.size(), 1U);
  EXPECT_EQ(changes.granted[0].first, cookie(2));
  EXPECT_EQ(changes.granted[0].second.backend, a);
  EXPECT_TRUE(pool_.queued(cookie(3)));
}

TEST_F(QueuedPoolTest, ANewTestDoesNotOvertakeAWaitingOne) {
  add(1);
  ASSERT_TRUE(leased(cookie(1)));
  ASSERT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(2), now_)));
  pool_.release(cookie(1), now_);
  // The backend is free, but cookie(2) came first: the newcomer queues behind it.
  EXPECT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(3), now_)));
  auto changes = pool_.poll(now_);
  ASSERT_EQ(changes.granted.size(), 1U);
  EXPECT_EQ(changes.granted[0].first, cookie(2));
}

TEST_F(QueuedPoolTest, AWaitEndsAtItsDeadlineAndAGoneTestLeavesTheQueue) {
  add(1);
  ASSERT_TRUE(leased(cookie(1)));
  ASSERT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(2), now_)));
  advance(milliseconds(1000));
  ASSERT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(3), now_)));
  pool_.release(cookie(3), now_);  // the client went away
  EXPECT_FALSE(pool_.queued(cookie(3)));
  EXPECT_EQ(pool_.nextDeadline(now_), now_ + milliseconds(4000));
  advance(milliseconds(4000));
  auto changes = pool_.poll(now_);
  EXPECT_TRUE(changes.granted.empty());
  ASSERT_EQ(changes.expired.size(), 1U);
  EXPECT_EQ(changes.expired[0].test, cookie(2));
  EXPECT_EQ(pool_.queueLength(), 0U);
}

TEST_F(BackendPoolTest, AFaultyBackendSitsOutABackoffThatDoublesUntilItWorks) {
  const BackendId a = add(1);
  const BackendId b = add(2);
  ASSERT_EQ(leased(cookie(1)), a);
  EXPECT_FALSE(pool_.fault(cookie(1), BackendFault::Refused, now_));
  EXPECT_FALSE(pool_.leaseOf(cookie(1)));
  // The test asks again and gets the other backend.
  EXPECT_EQ(leased(cookie(1)), b);
  EXPECT_TRUE(std::holds_alternative<BackendPool::Refused>(pool_.request(cookie(2), now_)));
  advance(milliseconds(1000));  // the first backoff (1 s) is over
  EXPECT_EQ(leased(cookie(2)), a);
  EXPECT_FALSE(pool_.fault(cookie(2), BackendFault::Refused, now_));
  advance(milliseconds(1000));  // the second one is 2 s
  EXPECT_FALSE(leased(cookie(3)));
  advance(milliseconds(1000));
  EXPECT_EQ(leased(cookie(3)), a);
  pool_.release(cookie(3), now_);  // a test ran to its end: the backoff starts small again
  ASSERT_EQ(leased(cookie(4)), a);
  pool_.fault(cookie(4), BackendFault::Refused, now_);
  advance(milliseconds(1000));
  EXPECT_EQ(leased(cookie(5)), a);
}

TEST_F(BackendPoolTest, ABackendThatKeepsAnsweringBusyIsReportedHungOnce) {
  const BackendId a = add(1);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(leased(cookie(i)), a);
    EXPECT_EQ(pool_.fault(cookie(i), BackendFault::Busy, now_), i == 2) << i;
    advance(milliseconds(60'000));
  }
  ASSERT_EQ(leased(cookie(3)), a);
  EXPECT_FALSE(pool_.fault(cookie(3), BackendFault::Busy, now_));
}

TEST_F(BackendPoolTest, ABackendThatAnsweredBusyIsTakenNotDown) {
  // Out of dispatch for its backoff, but up: the next client hears "busy", as it would from
  // the server itself, not "unable to connect".
  add(1);
  ASSERT_TRUE(leased(cookie(1)));
  pool_.fault(cookie(1), BackendFault::Busy, now_);
  auto answer = pool_.request(cookie(1), now_);
  ASSERT_TRUE(std::holds_alternative<BackendPool::Refused>(answer));
  EXPECT_FALSE(std::get<BackendPool::Refused>(answer).none_up);
}

TEST_F(BackendPoolTest, AnEmbeddedServerThatIsDownTakesNoTest) {
  const BackendId e = pool_.add("embedded-1", BackendKind::Embedded, std::nullopt, now_);
  EXPECT_FALSE(pool_.canTakeTests(now_));
  auto answer = pool_.request(cookie(1), now_);
  ASSERT_TRUE(std::holds_alternative<BackendPool::Refused>(answer));
  EXPECT_EQ(std::get<BackendPool::Refused>(answer).why, "no backend is up");
  EXPECT_TRUE(std::get<BackendPool::Refused>(answer).none_up);
  pool_.setAddress(e, address(7), now_);
  EXPECT_TRUE(pool_.canTakeTests(now_));
  EXPECT_EQ(leased(cookie(1)), e);
}

TEST_F(BackendPoolTest, ARetiredBackendFinishesItsTestThenLeaves) {
  const BackendId a = add(1);
  add(2);
  ASSERT_EQ(leased(cookie(1)), a);
  pool_.retire(a);
  EXPECT_EQ(pool_.backends(now_).size(), 2U);
  EXPECT_EQ(pool_.backends(now_)[0].state, BackendState::Retired);
  pool_.release(cookie(1), now_);
  ASSERT_EQ(pool_.backends(now_).size(), 1U);
  EXPECT_NE(leased(cookie(2)), a);
}

TEST_F(QueuedPoolTest, AWaitingTestGetsABackendWhoseBackoffEnds) {
  const BackendId a = add(1);
  ASSERT_EQ(leased(cookie(1)), a);
  pool_.fault(cookie(1), BackendFault::Silent, now_);
  ASSERT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(1), now_)));
  EXPECT_EQ(pool_.nextDeadline(now_), now_ + milliseconds(1000));
  advance(milliseconds(1000));
  auto changes = pool_.poll(now_);
  ASSERT_EQ(changes.granted.size(), 1U);
  EXPECT_EQ(changes.granted[0].second.backend, a);
}

// Each fault sends the test back to the queue; its wait still counts from its first request, so
// backends that keep failing it (silent, answering "busy") cannot keep it waiting for ever.
TEST_F(QueuedPoolTest, ATestWhoseBackendKeepsFailingItWaitsNoLongerThanTheQueueTimeout) {
  const TimePoint first_request = now_;
  const BackendId a = add(1);
  ASSERT_EQ(leased(cookie(1)), a);
  advance(milliseconds(4000));
  pool_.fault(cookie(1), BackendFault::Silent, now_);
  ASSERT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(1), now_)));
  EXPECT_EQ(pool_.nextDeadline(now_), first_request + milliseconds(5000));
  now_ = first_request + milliseconds(5000);
  ASSERT_EQ(pool_.poll(now_).granted.size(), 1U);  // the backoff ended just in time
  advance(milliseconds(1000));
  pool_.fault(cookie(1), BackendFault::Silent, now_);
  const auto answer = pool_.request(cookie(1), now_);
  ASSERT_TRUE(std::holds_alternative<BackendPool::Refused>(answer));
  EXPECT_TRUE(std::get<BackendPool::Refused>(answer).waited_out);
  EXPECT_EQ(pool_.queueLength(), 0U);
}

// Queued again after a fault, the test keeps its first deadline and expires on it.
TEST_F(QueuedPoolTest, ATestQueuedAgainAfterAFaultKeepsItsFirstDeadline) {
  const TimePoint first_request = now_;
  const BackendId a = add(1);
  ASSERT_TRUE(leased(cookie(1)));
  advance(milliseconds(3000));
  pool_.fault(cookie(1), BackendFault::Closed, now_);
  ASSERT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(1), now_)));
  pool_.retire(a);  // no backend will come free
  EXPECT_TRUE(pool_.poll(first_request + milliseconds(4999)).expired.empty());
  const auto changes = pool_.poll(first_request + milliseconds(5000));
  ASSERT_EQ(changes.expired.size(), 1U);
  EXPECT_EQ(changes.expired[0].test, cookie(1));
  EXPECT_FALSE(changes.expired[0].behind_finishing);
}

// A server removed while it runs a test and listed again before that test ends is the same
// backend, still busy: nothing else may be sent to it.
TEST_F(BackendPoolTest, ARetiredBackendListedAgainComesBackStillRunningItsTest) {
  const BackendId a = add(1);
  ASSERT_EQ(leased(cookie(1)), a);
  pool_.retire(a);
  ASSERT_EQ(pool_.retiredAt(address(1)), a);
  EXPECT_FALSE(pool_.retiredAt(address(2)));
  pool_.unretire(a);
  EXPECT_FALSE(pool_.retiredAt(address(1)));
  EXPECT_FALSE(leased(cookie(2)));  // still running cookie(1)'s test
  pool_.release(cookie(1), now_);
  EXPECT_EQ(leased(cookie(3)), a);  // and not forgotten when that test ended
}

TEST_F(BackendPoolTest, WithoutAQueueANewTestStillWaitsForATestThatIsFinishing) {
  // A client that starts its next test the moment its last one ended must not be told "busy"
  // by its own previous test: the proxy may not have seen the end of it yet.
  const BackendId a = add(1);
  ASSERT_EQ(leased(cookie(1)), a);
  pool_.finishing(cookie(1));
  EXPECT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(2), now_)));
  // One waiter per finishing backend: a third test is busy.
  EXPECT_TRUE(std::holds_alternative<BackendPool::Refused>(pool_.request(cookie(3), now_)));
  pool_.release(cookie(1), now_);
  auto changes = pool_.poll(now_);
  ASSERT_EQ(changes.granted.size(), 1U);
  EXPECT_EQ(changes.granted[0].first, cookie(2));
}

TEST_F(BackendPoolTest, AWaitForAFinishingTestEndsAtItsOwnDeadline) {
  add(1);
  ASSERT_TRUE(leased(cookie(1)));
  pool_.finishing(cookie(1));
  ASSERT_TRUE(std::holds_alternative<BackendPool::Queued>(pool_.request(cookie(2), now_)));
  advance(PoolSettings{}.finishing_wait);
  auto changes = pool_.poll(now_);
  EXPECT_TRUE(changes.granted.empty());
  ASSERT_EQ(changes.expired.size(), 1U);
  EXPECT_EQ(changes.expired[0].test, cookie(2));
  EXPECT_TRUE(changes.expired[0].behind_finishing);
}

}  // namespace
}  // namespace iperf3proxy::pool
