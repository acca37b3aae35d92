#pragma once

#include <array>
#include <string>
#include <vector>

#include "proxy/close_reason.h"
#include "proxy/server.h"
#include "proxy/server_observer.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

namespace iperf3proxy::metrics {

// The proxy's Prometheus metrics (README, "Metrics"). Two kinds, by where their truth lives:
//   * events the front learns of (a test ended, a connection refused, a datagram dropped, a test
//     reached TEST_RUNNING) are counted here as they happen, in prometheus-cpp's registry; every
//     call comes on the front's loop (proxy::ServerObserver), the workers never touch them;
//   * state is read from the server when scraped, on the front's loop too: tests running and
//     queued, each backend's state and tests, and the bytes relayed so far (running tests
//     included: the workers add to proxy::TrafficCounters once a second, atomically).
// Every label set that can occur is there from the start, at 0, so rates work from the first
// scrape.
class ProxyMetrics final : public proxy::ServerObserver {
 public:
  explicit ProxyMetrics(const std::string& version);
  ~ProxyMetrics() override;
  ProxyMetrics(const ProxyMetrics&) = delete;
  ProxyMetrics& operator=(const ProxyMetrics&) = delete;

  // The metrics page (Prometheus text format 0.0.4) as of now.
  std::string scrape(const proxy::Server& server);

  // proxy::ServerObserver
  void connectionRefused(RefusedConnection why) override;
  void datagramDropped(DroppedDatagram why) override;
  void testRefused(proxy::CloseReason reason) override;
  void testRunning(std::chrono::duration<double> setup) override;
  void testEnded(const proxy::TestSummary& summary) override;

 private:
  // Families built from the server's state at each scrape.
  static std::vector<prometheus::MetricFamily> stateFamilies(const proxy::Server& server);

  prometheus::Registry registry_;
  std::array<prometheus::Counter*, proxy::kCloseReasonCount> tests_;
  std::array<prometheus::Counter*, 5> connections_refused_;
  std::array<prometheus::Counter*, 3> datagrams_dropped_;  // no-test, not-connect, in a flow
  prometheus::Histogram* setup_seconds_;
  prometheus::Counter* roles_repaired_;
  prometheus::Counter* roles_guessed_;
  prometheus::Counter* out_of_order_;
  prometheus::Gauge* tests_running_;
  prometheus::Gauge* tests_queued_;
};

// How a test ended, coarsely (the `outcome` label beside `reason`): "completed"; "refused" when
// the client was answered "busy", "cannot connect" or an error before its test could run; else
// "failed".
std::string_view outcomeOf(proxy::CloseReason reason);

}  // namespace iperf3proxy::metrics
