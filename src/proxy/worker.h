#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ev/event_loop.h"
#include "ev/poll_ticker.h"
#include "net/address.h"
#include "net/datagram_batch.h"
#include "net/unique_fd.h"
#include "pool/backend_pool.h"
#include "proto/cookie.h"
#include "proxy/session.h"
#include "proxy/settings.h"
#include "proxy/test_report.h"
#include "proxy/traffic_counters.h"

namespace iperf3proxy::proxy {

// What workers report to the front (the Server: it accepts, routes by cookie and dispatches
// tests to backends). Every call arrives on the front's loop.
class Front {
 public:
  virtual ~Front() = default;
  virtual void onBackendFault(const proto::Cookie& test, pool::BackendFault fault) = 0;
  virtual void onUdpSetupRequested(const proto::Cookie& test, const std::string& client_host) = 0;
  virtual void onUdpSetupDone(const proto::Cookie& test) = 0;
  // A datagram that a new flow's socket caught before it was connected (see UdpFlow): routed as
  // if the listener on `local` had read it.
  virtual void onStrayDatagram(const net::Address& local,
                               const net::Address& source,
                               const std::vector<std::uint8_t>& datagram) = 0;
  virtual void onTestFinishing(const proto::Cookie& test) = 0;
  // A test reached TEST_RUNNING, `setup` after its control connection was accepted.
  virtual void onTestRunning(std::chrono::duration<double> setup) = 0;
  virtual void onSessionEnded(const proto::Cookie& test,
                              const TestSummary& summary,
                              bool backend_broke) = 0;
};

// An event loop that runs tests: it owns their sessions, and every connection and flow of a test
// lives on the one worker that runs it, so the data path never takes a lock. The front and the
// workers talk only by posting tasks to each other's loops (EventLoop::post); sessions are named
// by cookie in those tasks, never by pointer, since either side may have moved on.
//
// With --threads 1 the one worker runs on the front's own loop; otherwise each worker has a
// thread of its own (WorkerThread).
class Worker : private SessionHost {
 public:
  Worker(int index,
         ev::EventLoop& loop,        // the worker's loop
         ev::EventLoop& front_loop,  // where Front calls are posted
         Front& front,
         const ProxySettings& settings,
         TrafficCounters& traffic);  // outlives the worker
  ~Worker() override;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Called on the worker's loop (the front posts them).
  void startSession(const proto::Cookie& test,
                    net::UniqueFd client,
                    const net::Address& peer,
                    std::chrono::steady_clock::time_point accepted,
                    std::optional<pool::Lease> lease);
  void attachStream(const proto::Cookie& test, net::UniqueFd fd, const net::Address& peer);
  void backendGranted(const proto::Cookie& test, pool::Lease lease);
  void noBackend(const proto::Cookie& test, CloseReason reason, const std::string& detail);
  void udpSetupGranted(const proto::Cookie& test);
  void datagram(const proto::Cookie& test,
                const net::Address& proxy_local,
                const net::Address& source,
                const std::vector<std::uint8_t>& bytes);
  // Closes every session (shutdown).
  void closeAll(CloseReason reason);

  int index() const { return index_; }

  ev::EventLoop& loop() { return loop_; }

 private:
  Session* find(const proto::Cookie& test);

  // proxy::SessionHost: each call is passed on to the front's loop.
  void backendFault(const proto::Cookie& test, pool::BackendFault fault) override;
  void requestUdpSetup(const proto::Cookie& test, const std::string& client_host) override;
  void udpSetupDone(const proto::Cookie& test) override;
  void testFinishing(const proto::Cookie& test) override;
  void testRunning(std::chrono::duration<double> setup) override;
  void sessionEnded(const proto::Cookie& test,
                    const TestSummary& summary,
                    bool backend_broke) override;

  LoopDatagramIo udpIo() override;

  TrafficCounters& traffic() override { return traffic_; }

  std::shared_ptr<PipePool> pipePool() override { return pipes_; }

  int index_;
  ev::EventLoop& loop_;
  ev::EventLoop& front_loop_;
  Front& front_;
  const ProxySettings& settings_;
  TrafficCounters& traffic_;
  net::DatagramBatch udp_batch_;
  // Shared with the UDP relays, which may outlive the worker on the loop's deferred-delete queue.
  std::shared_ptr<ev::PollTicker> udp_ticker_;
  // Shared with the relays that hold its pipes: they may outlive the worker on the loop's
  // deferred-delete queue.
  std::shared_ptr<PipePool> pipes_;
  std::unordered_map<proto::Cookie, std::unique_ptr<Session>, proto::CookieHash> sessions_;
};

// A worker with a thread and a loop of its own.
class WorkerThread {
 public:
  WorkerThread(int index,
               ev::EventLoop& front_loop,
               Front& front,
               const ProxySettings& settings,
               TrafficCounters& traffic);
  ~WorkerThread();
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  Worker& worker() { return worker_; }

  // Closes the worker's sessions, stops its loop and joins the thread. Idempotent.
  void stop();

 private:
  ev::EventLoop loop_;
  Worker worker_;
  std::thread thread_;
  bool stopped_ = false;
};

}  // namespace iperf3proxy::proxy
