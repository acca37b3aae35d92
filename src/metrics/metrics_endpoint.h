#pragma once

#include <memory>
#include <string>

#include "ev/http_server.h"
#include "metrics/proxy_metrics.h"
#include "net/address.h"
#include "proxy/server.h"

namespace iperf3proxy::metrics {

// --metrics [ADDR:]PORT: an HTTP port beside the proxy's own, on the front's loop, serving
//   /metrics  the Prometheus text format (ProxyMetrics);
//   /healthz  200 while the process serves (the loop answers);
//   /readyz   200 when some backend can take a test now (Backends::canTakeTests) and the proxy is
//             not draining, else 503.
// Probes take no test slot: they never touch the iperf3 port, the pool or the tests.
class MetricsEndpoint {
 public:
  // Observes `server` (which outlives the endpoint) from now on.
  MetricsEndpoint(ev::EventLoop& loop, proxy::Server& server, const std::string& version);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // Listens on `at` (port 0: any free port). False with `error` set if it cannot.
  bool listen(const net::Address& at, std::string* error);

  // Where it listens (port 0 resolved), for the startup log.
  const net::Address& boundAddress() const { return bound_; }

 private:
  proxy::Server& server_;
  ProxyMetrics metrics_;
  ev::HttpServer http_;
  net::Address bound_;
};

}  // namespace iperf3proxy::metrics
