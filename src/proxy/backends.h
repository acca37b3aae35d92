#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ev/io_event.h"
#include "net/address.h"
#include "pool/backend_pool.h"
#include "proto/cookie.h"
#include "proxy/backend_probe.h"
#include "proxy/embedded_server.h"

namespace iperf3proxy::proxy {

// Where the iperf3 servers behind the proxy come from.
struct BackendsConfig {
  std::vector<std::string> given;   // --backend HOST:PORT, any number
  std::optional<std::string> file;  // --backends-file PATH, re-read on SIGHUP
  int embedded = 0;                 // --servers N: iperf3 -s the proxy runs itself
  std::string iperf3_path = "iperf3";
  std::vector<std::string> iperf3_args;  // passed to every embedded iperf3 -s
};

// The pool of iperf3 servers, as the front sees it: the dispatch policy (pool::BackendPool),
// the embedded servers it runs, the backends file it re-reads, and the timer that lets queued
// tests' deadlines pass. Lives on the front's loop.
//
// A backend the proxy does not run (--backend, --backends-file) is taken to be up until a
// connection to it is refused (or does not connect in time). Then it is down: out of dispatch,
// and checked every second with a TCP connect (BackendProbe), which disturbs nothing while
// nothing listens there; the first connect that succeeds puts it back. Live servers are never
// probed: a connection to an iperf3 server is a test attempt to it. So /readyz turns false once
// the proxy has found every backend refusing, and stays so until one listens again.
class Backends {
 public:
  struct Callbacks {
    // A queued test has a backend now.
    std::function<void(const proto::Cookie&, const pool::Lease&)> on_granted;
    // A queued test waited in vain: --queue-timeout, or (`behind_finishing`) the wait for a
    // test that was finishing.
    std::function<void(const proto::Cookie&, bool behind_finishing)> on_expired;
  };

  Backends(ev::EventLoop& loop,
           BackendsConfig config,
           pool::PoolSettings settings,
           Callbacks callbacks);
  ~Backends();
  Backends(const Backends&) = delete;
  Backends& operator=(const Backends&) = delete;

  // Resolves the given backends, reads the file, starts the embedded servers. False with
  // `error` set if any of it fails (the proxy then does not start), and `exit_code` 2 for a
  // mistake in the configuration, 1 for a failure to start.
  bool start(std::string* error, int* exit_code);

  // Re-reads --backends-file: added backends take tests at once; removed ones finish their
  // running test first. A file that cannot be read or parsed changes nothing (logged).
  void reload();

  pool::BackendPool::Answer request(const proto::Cookie& test);
  void fault(const proto::Cookie& test, pool::BackendFault fault);
  void release(const proto::Cookie& test, bool backend_broke);

  void finishing(const proto::Cookie& test) { pool_.finishing(test); }

  // SIGCHLD: an embedded server may have exited.
  void onChildSignal();

  // Stops the embedded servers (and waits for them).
  void stop();

  bool canTakeTests() const;

  bool leased(const proto::Cookie& test) const { return pool_.leaseOf(test).has_value(); }

  std::size_t queueLength() const { return pool_.queueLength(); }

  std::vector<pool::BackendView> view() const;

  // One line for the startup log: how many of each kind.
  std::string describe() const;

  std::uint64_t faults(pool::BackendFault fault) const {
    return faults_[static_cast<std::size_t>(fault)];
  }

  std::uint64_t hungReports() const { return hung_reports_; }

  // "faults refused=1 silent=0 busy=3 closed=0 broke=0 hung=1; embedded restarts=2".
  std::string faultSummary() const;

 private:
  // Waits (at startup, before the loop runs) until every embedded server listens.
  bool awaitEmbeddedListening(std::string* error, int* exit_code);
  bool addFromFile(const std::string& text, std::string* error);
  pool::BackendId addGiven(const net::Address& address);
  // The given backend (--backend or the file) at `address`, if one is in dispatch. One server is
  // one backend however it is spelled: listed twice, the pool would send a second test to a
  // server that runs one.
  std::optional<pool::BackendId> givenAt(const net::Address& address) const;
  // A given backend refused a connection: down until a probe connects.
  void markDown(pool::BackendId id);
  void probeDown();
  bool readFile(std::vector<std::string>* entries, std::string* error) const;
  // Hands free backends to queued tests, expires waits, and re-arms the timer.
  void settle();
  void armTimer();

  ev::EventLoop& loop_;
  BackendsConfig config_;
  Callbacks callbacks_;
  pool::BackendPool pool_;
  std::vector<std::unique_ptr<EmbeddedServer>> embedded_;
  std::map<pool::BackendId, EmbeddedServer*> embedded_by_id_;
  std::map<std::string, pool::BackendId> from_file_;  // by resolved address (Address::toString)
  std::map<pool::BackendId, net::Address> given_;     // --backend and --backends-file
  // Given backends that are down, each with its probe while one is under way.
  std::map<pool::BackendId, std::unique_ptr<BackendProbe>> down_;
  std::array<std::uint64_t, 5> faults_{};
  std::uint64_t hung_reports_ = 0;
  ev::Timer tick_;
  ev::Timer probe_tick_;
};

}  // namespace iperf3proxy::proxy
