#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "net/address.h"
#include "proto/cookie.h"

namespace iperf3proxy::pool {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Milliseconds = std::chrono::milliseconds;

// Identifies one backend for the life of the process (never reused).
using BackendId = std::uint32_t;

// A test is known by its cookie everywhere in the proxy.
using TestKey = proto::Cookie;

enum class BackendKind : std::uint8_t {
  Given,     // --backend or --backends-file: an iperf3 -s the proxy does not run
  Embedded,  // an iperf3 -s the proxy started itself (--servers)
};

// Why a backend could not take the test it was given. Each one puts the backend out of
// dispatch for a backoff that doubles while the faults go on.
enum class BackendFault : std::uint8_t {
  Refused,  // connect refused or unreachable, beyond the moment the server re-listens
  Silent,   // connected, took the cookie, answered nothing in time (stopped or hung)
  Busy,     // answered ACCESS_DENIED although no proxied test runs on it (used directly, or hung)
  Closed,   // closed or reset the control connection before its first answer
  Broke,    // the server's side of a running test broke (reset, or closed early)
};

std::string_view backendFaultName(BackendFault fault);

struct PoolSettings {
  // How long a new test may wait for a free backend; zero answers "busy" at once, as iperf3.
  Milliseconds queue_timeout{0};
  std::size_t queue_length = 64;
  // After a test ends (and after an embedded server starts), the iperf3 server closes and
  // re-opens its listener: connects refused within this window are retried, not a fault.
  Milliseconds relisten_grace{1000};
  Milliseconds backoff_min{1000};
  Milliseconds backoff_max{30000};
  // "Busy" answers in a row, with no proxied test on the backend, that make it reported as hung
  // (and an embedded one restarted).
  int busy_streak_hung = 3;
  // A test that finds every backend taken but one of them finishing its test (past IPERF_DONE)
  // waits for it up to this long, queue or no queue: a client that starts its next test the
  // moment its last one ended must not be told "busy" by its own previous test.
  Milliseconds finishing_wait{15000};
};

// The right to run one test on one backend, until the test gives it back.
struct Lease {
  BackendId backend = 0;
  std::string name;  // for logs
  net::Address address;
  // Refused connects before this moment are the server re-listening after its previous test (or
  // after it started): retry them rather than count them as a fault.
  TimePoint refusals_expected_until{};
};

// Where a backend stands, for logs, /readyz and metrics.
enum class BackendState : std::uint8_t {
  Idle,     // up and free: the next test may go here
  Running,  // a proxied test runs on it
  Backoff,  // a recent fault; out of dispatch until the backoff ends
  Down,     // an embedded server that is not running (restarting)
  Retired,  // removed from the configuration; leaves once its test ends
};

std::string_view backendStateName(BackendState state);

struct BackendView {
  BackendId id = 0;
  std::string name;
  BackendKind kind = BackendKind::Given;
  BackendState state = BackendState::Idle;
  std::uint64_t tests = 0;  // leases given
  std::uint64_t faults = 0;
  int busy_streak = 0;
};

// The pool of iperf3 servers behind the proxy's one port, and the policy that gives each new test
// a server of its own: a server that is up and runs no proxied test, least recently used first;
// first come, first served through a bounded queue when every server is taken. Pure logic: the
// caller passes the time in and arms one timer for nextDeadline(); no sockets, no clock.
//
// One test holds at most one lease. A test is either leased, queued, or unknown to the pool.
class BackendPool {
 public:
  explicit BackendPool(PoolSettings settings);

  BackendId add(std::string name,
                BackendKind kind,
                std::optional<net::Address> address,
                TimePoint now);

  // An embedded server (re)started on `address`, or exited (nullopt: out of dispatch).
  void setAddress(BackendId id, std::optional<net::Address> address, TimePoint now);

  // Takes the backend out of dispatch; it is forgotten once its running test (if any) ends.
  void retire(BackendId id);

  // A retired backend at `address` that is still running its test, if any: listed again, it
  // comes back (unretire) rather than being added a second time beside itself.
  std::optional<BackendId> retiredAt(const net::Address& address) const;
  void unretire(BackendId id);

  struct Queued {};

  struct Refused {
    // No backend is up at all (the client is told the server cannot be reached), or every one
    // is running a test (the client is told "busy").
    bool none_up = false;
    std::string why;  // for the log line
    // A test asking again (its backend failed it) has already waited as long as it may.
    bool waited_out = false;
  };

  using Answer = std::variant<Lease, Queued, Refused>;

  // A new test (or one whose backend failed it) asks for a backend. Queued: it waits until
  // poll() grants it one or lets its deadline pass. A test's wait counts from its first request
  // until it ends (release()), so a test whose backends keep failing it still gets its answer
  // within --queue-timeout.
  Answer request(const TestKey& test, TimePoint now);

  // The test is past IPERF_DONE: its backend will be free in a moment.
  void finishing(const TestKey& test);

  // The test's backend could not take it; the test holds no lease any more (it may request
  // again). Returns true when this fault makes the backend look hung: "busy" answers
  // busy_streak_hung times in a row while no proxied test ran on it.
  bool fault(const TestKey& test, BackendFault fault, TimePoint now);

  // The test ended, or a queued test went away: its lease or its place in the queue goes back.
  // `backend_broke`: the server's side broke during the test (counts as a fault).
  void release(const TestKey& test, TimePoint now, bool backend_broke = false);

  struct Expiry {
    TestKey test;
    bool behind_finishing;  // it waited for a finishing test (finishing_wait), not in the queue
  };

  struct Changes {
    std::vector<std::pair<TestKey, Lease>> granted;  // queued tests that have a backend now
    std::vector<Expiry> expired;                     // queued tests past their deadline
  };

  // Hands free backends to queued tests in order and expires waits; call after anything that
  // may free a backend, and when nextDeadline() has passed.
  Changes poll(TimePoint now);

  // The next moment poll() may have something to do (a queue deadline, a backoff ending while
  // tests wait), if any.
  std::optional<TimePoint> nextDeadline(TimePoint now) const;

  // Tests may start (/readyz): some backend is up and out of backoff, and either free or the
  // queue has room.
  bool canTakeTests(TimePoint now) const;

  std::optional<BackendId> leaseOf(const TestKey& test) const;
  bool queued(const TestKey& test) const;

  std::size_t queueLength() const { return queue_.size(); }

  std::size_t runningTests() const { return leases_.size(); }

  std::vector<BackendView> backends(TimePoint now) const;
  std::optional<BackendKind> kindOf(BackendId id) const;
  const std::string* nameOf(BackendId id) const;

 private:
  struct Backend {
    BackendId id;
    std::string name;
    BackendKind kind;
    std::optional<net::Address> address;
    std::optional<TestKey> test;
    bool retired = false;
    bool finishing = false;  // its test is past IPERF_DONE
    TimePoint idle_since{};  // LRU order, and the re-listen window after a test
    TimePoint started{};     // when the address was (re)set: the re-listen window after a start
    TimePoint backoff_until{};
    Milliseconds backoff{};
    int busy_streak = 0;
    bool last_fault_busy = false;  // in backoff for answering "busy": up, but taken
    std::uint64_t tests = 0;
    std::uint64_t faults = 0;
  };

  struct Waiter {
    TestKey test;
    TimePoint deadline;
    bool behind_finishing;  // waits for a finishing test, not in the --queue-timeout queue
  };

  bool eligible(const Backend& backend, TimePoint now) const;
  Backend* pickFree(TimePoint now);
  Lease leaseFor(Backend& backend, const TestKey& test);
  Backend* find(BackendId id);
  const Backend* find(BackendId id) const;
  void penalise(Backend& backend, TimePoint now);
  void forgetRetired();
  void freeBackend(Backend& backend, TimePoint now);
  bool mayWaitForFinishing() const;
  BackendState stateOf(const Backend& backend, TimePoint now) const;
  // Running, or able to: has an address, is not retired, and is not in backoff for being down.
  bool up(const Backend& backend, TimePoint now) const;

  PoolSettings settings_;
  BackendId next_id_ = 1;
  std::vector<Backend> backends_;
  std::deque<Waiter> queue_;
  std::unordered_map<TestKey, BackendId, proto::CookieHash> leases_;
  // When each test that holds a lease or waits first asked: its wait's deadline counts from here.
  std::unordered_map<TestKey, TimePoint, proto::CookieHash> asked_since_;
};

}  // namespace iperf3proxy::pool
