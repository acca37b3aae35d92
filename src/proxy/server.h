#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/datagram_batch.h"
#include "net/unique_fd.h"
#include "pool/udp_setup_turns.h"
#include "proto/cookie.h"
#include "proxy/backends.h"
#include "proxy/pending_conn.h"
#include "proxy/recent_cookies.h"
#include "proxy/server_observer.h"
#include "proxy/settings.h"
#include "proxy/stats.h"
#include "proxy/throttled_log.h"
#include "proxy/traffic_counters.h"
#include "proxy/worker.h"

namespace iperf3proxy::proxy {

// The front of the proxy: accepts every TCP connection and datagram on the proxy's port, reads
// each connection's cookie, and routes it: a cookie no live test holds starts a new test, which
// gets a backend of its own from the pool (or waits in its queue, or is answered "busy") and a
// worker to run on; a known cookie is a data connection of that test and goes to its worker.
// UDP flows carry no cookie: the test whose turn it is to set up UDP streams from a client
// address (pool::UdpSetupTurns) gets the new flows from that address.
//
// Runs on the main loop; the tests run on the workers (worker.h), which report back here.
class Server : private Front {
 public:
  // `threads`: worker loops; 1 runs the tests on `loop` itself.
  Server(ev::EventLoop& loop,
         const ProxySettings& settings,
         const BackendsConfig& backends,
         const pool::PoolSettings& pool_settings,
         int threads);
  ~Server() override;
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts the backends (embedded servers included). False with `error` and the process's
  // exit code set if they cannot.
  bool startBackends(std::string* error, int* exit_code);

  // Starts listening. Returns false with `error` set if no address could be bound.
  bool listen(const std::vector<net::Address>& addresses, std::string* error);

  // The addresses actually bound (port 0 resolved), for the ready line.
  std::vector<net::Address> boundAddresses() const;

  // Stops starting new tests (new control connections and queued tests are answered "busy";
  // data connections of running tests still come in) and calls `drained` once the last test
  // has ended.
  void drain(std::function<void()> drained);

  // Stops accepting, closes every test now and stops the embedded servers.
  void shutdown();

  // SIGHUP: re-read --backends-file.
  void reloadBackends() { backends_.reload(); }

  // SIGCHLD.
  void onChildSignal() { backends_.onChildSignal(); }

  std::size_t testCount() const { return tests_.size(); }

  // After drain(): no new tests.
  bool draining() const { return draining_; }

  const ProxyStats& stats() const { return stats_; }

  // The counters, and what the backends did, in one line (logged every minute if changed, and
  // at exit).
  std::string statsLine() const;

  const Backends& backends() const { return backends_; }

  // Test data relayed so far, running tests included (updated by the workers once a second).
  const TrafficCounters& traffic() const { return traffic_; }

  // Tests waiting for a free backend, and the others the front knows of (running, or being set
  // up on a backend).
  std::size_t queuedTests() const { return backends_.queueLength(); }

  std::size_t runningTests() const {
    return tests_.size() - std::min(tests_.size(), queuedTests());
  }

  // Tells `observer` (which outlives the server) what happens from now on; nullptr: nobody.
  void setObserver(ServerObserver* observer);

 private:
  struct Listener {
    net::UniqueFd fd;
    net::Address address;
    std::unique_ptr<ev::IoEvent> readable;
  };

  // A test the front has handed to a worker, until the worker reports its end.
  struct Test {
    Worker* worker;
    std::string client_host;             // for --max-tests-per-client
    std::vector<std::string> udp_flows;  // "addr:port" keys in udp_flows_
  };

  // Why a datagram on the shared UDP port was not relayed.
  enum class UdpDrop { NoTest, NotConnectMessage };

  void onAcceptable(Listener& listener);
  // --allow/--deny: false (and the connection answered and closed) for a client not allowed.
  bool admit(net::UniqueFd& fd, const net::Address& peer);
  // --max-tests-per-client: the client's tests, running and waiting, are already that many.
  bool atClientLimit(const std::string& client_host) const;
  void onUdpReadable(Listener& listener);
  // Sends a datagram that reached UDP port `local` from `source` to the worker of its test.
  void routeDatagram(const net::Address& local,
                     const net::Address& source,
                     std::span<const std::uint8_t> datagram);
  void dropDatagram(UdpDrop why, const net::Address& source);
  void pauseAccepting();
  void onCookie(PendingConn& pending, proto::Cookie cookie, net::UniqueFd fd);
  void onRejected(PendingConn& pending, PendingConn::Rejection kind, const std::string& why);
  void startTest(const proto::Cookie& cookie,
                 net::UniqueFd fd,
                 const net::Address& peer,
                 std::chrono::steady_clock::time_point accepted);
  // Answers a new test that cannot run: "busy", or, when no backend is up at all
  // (CloseReason::BackendUnreachable), the server error a client gets when it cannot connect.
  void refuseTest(net::UniqueFd fd,
                  const net::Address& peer,
                  const std::string& why,
                  CloseReason reason);
  void refuseStaleStream(net::UniqueFd fd, const net::Address& peer);
  Worker& pickWorker();
  void logStatsIfChanged();
  void retire(PendingConn& pending);
  void evictOldestPending();
  void checkDrained();
  void sendNoBackend(const proto::Cookie& test, CloseReason reason, const std::string& detail);

  // Backends callbacks.
  void onQueuedGranted(const proto::Cookie& test, const pool::Lease& lease);
  void onQueueExpired(const proto::Cookie& test, bool behind_finishing);

  // proxy::Front (from the workers)
  void onBackendFault(const proto::Cookie& test, pool::BackendFault fault) override;
  void onUdpSetupRequested(const proto::Cookie& test, const std::string& client_host) override;
  void onUdpSetupDone(const proto::Cookie& test) override;
  void onStrayDatagram(const net::Address& local,
                       const net::Address& source,
                       const std::vector<std::uint8_t>& datagram) override;

  void onTestFinishing(const proto::Cookie& test) override { backends_.finishing(test); }

  void onTestRunning(std::chrono::duration<double> setup) override {
    observer_->testRunning(setup);
  }

  void onSessionEnded(const proto::Cookie& test,
                      const TestSummary& summary,
                      bool backend_broke) override;

  ev::EventLoop& loop_;
  const ProxySettings& settings_;
  Backends backends_;
  std::vector<Listener> listeners_;
  std::vector<Listener> udp_listeners_;
  net::DatagramBatch udp_batch_;
  ProxyStats stats_;
  ServerObserver* observer_;
  // Written by the workers: declared before them, so it outlives them.
  TrafficCounters traffic_;
  std::string last_stats_logged_;
  ThrottledLog refused_log_;
  ThrottledLog busy_log_;
  ThrottledLog udp_drop_log_;
  std::unordered_map<PendingConn*, std::unique_ptr<PendingConn>> pending_;
  std::deque<PendingConn*> pending_order_;  // oldest first, for eviction
  std::unordered_map<proto::Cookie, Test, proto::CookieHash> tests_;
  std::unordered_map<std::string, proto::Cookie> udp_flows_;  // flows handed to a test
  std::unordered_map<std::string, int> tests_per_client_;     // by Test::client_host
  pool::UdpSetupTurns udp_turns_;
  RecentCookies recent_;
  // Workers: one on this loop, or one thread each. Declared after what their reports touch.
  std::unique_ptr<Worker> inline_worker_;
  std::vector<std::unique_ptr<WorkerThread>> worker_threads_;
  std::vector<Worker*> workers_;
  std::size_t next_worker_ = 0;
  std::vector<std::size_t> worker_load_;
  ev::Timer resume_accepting_;
  ev::Timer stats_tick_;
  bool draining_ = false;
  bool shut_down_ = false;
  std::function<void()> drained_;
};

}  // namespace iperf3proxy::proxy
