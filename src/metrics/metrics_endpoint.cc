#include "metrics/metrics_endpoint.h"

#include "net/socket_ops.h"

namespace iperf3proxy::metrics {

MetricsEndpoint::MetricsEndpoint(ev::EventLoop& loop,
                                 proxy::Server& server,
                                 const std::string& version)
    : server_(server), metrics_(version), http_(loop) {
  http_.route("/metrics", [this] {
    return ev::HttpServer::Response{200, "text/plain; version=0.0.4; charset=utf-8",
                                    metrics_.scrape(server_)};
  });
  http_.route("/healthz", [] { return ev::HttpServer::Response{200, "text/plain", "ok\n"}; });
  http_.route("/readyz", [this] {
    if (server_.draining()) {
      return ev::HttpServer::Response{503, "text/plain", "not ready: draining\n"};
    }
    if (!server_.backends().canTakeTests()) {
      return ev::HttpServer::Response{503, "text/plain", "not ready: no backend can take a test\n"};
    }
    return ev::HttpServer::Response{200, "text/plain", "ready\n"};
  });
  server_.setObserver(&metrics_);
}

MetricsEndpoint::~MetricsEndpoint() {
  server_.setObserver(nullptr);
}

bool MetricsEndpoint::listen(const net::Address& at, std::string* error) {
  net::UniqueFd fd = net::listenTcp(at, /*dual_stack=*/true, error);
  if (!fd) {
    return false;
  }
  bound_ = net::localAddress(fd.get()).value_or(at);
  return http_.serve(std::move(fd), error);
}

}  // namespace iperf3proxy::metrics
