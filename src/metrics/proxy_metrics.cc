#include "metrics/proxy_metrics.h"

#include <sstream>

#include <prometheus/text_serializer.h>

namespace iperf3proxy::metrics {
namespace {

using proxy::CloseReason;
using proxy::ServerObserver;

// Accept of the control connection to TEST_RUNNING: parameters, the backend's answer, every
// data connection; longer when the test waited in the queue.
const prometheus::Histogram::BucketBoundaries kSetupBuckets = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

prometheus::ClientMetric::Label label(std::string name, std::string_view value) {
  return {std::move(name), std::string(value)};
}

prometheus::MetricFamily family(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily result;
  result.name = std::move(name);
  result.help = std::move(help);
  result.type = type;
  return result;
}

void addCounter(prometheus::MetricFamily& to,
                std::vector<prometheus::ClientMetric::Label> labels,
                double value) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.counter.value = value;
  to.metric.push_back(std::move(metric));
}

void addGauge(prometheus::MetricFamily& to,
              std::vector<prometheus::ClientMetric::Label> labels,
              double value) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  to.metric.push_back(std::move(metric));
}

std::string_view kindName(pool::BackendKind kind) {
  return kind == pool::BackendKind::Embedded ? "embedded" : "given";
}

constexpr std::array kBackendStates = {pool::BackendState::Idle, pool::BackendState::Running,
                                       pool::BackendState::Backoff, pool::BackendState::Down,
                                       pool::BackendState::Retired};

}  // namespace

std::string_view outcomeOf(CloseReason reason) {
  switch (reason) {
    case CloseReason::Completed:
      return "completed";
    case CloseReason::ServerBusy:
    case CloseReason::NoBackendFree:
    case CloseReason::QueueTimeout:
    case CloseReason::TooManyTests:
    case CloseReason::TooManyClientTests:
    case CloseReason::TooManyStreams:
    case CloseReason::BitrateExceeded:
    case CloseReason::BackendUnreachable:
    case CloseReason::ParamsRejected:
    case CloseReason::UnsupportedTest:
    case CloseReason::DurationExceeded:
      return "refused";
    default:
      return "failed";
  }
}

ProxyMetrics::ProxyMetrics(const std::string& version) {
  prometheus::BuildGauge()
      .Name("iperf3_proxy_build_info")
      .Help("The proxy's version, as a label; always 1")
      .Register(registry_)
      .Add({{"version", version}})
      .Set(1);

  auto& tests = prometheus::BuildCounter()
                    .Name("iperf3_proxy_tests_total")
                    .Help(
                        "Tests that ended, by outcome and reason (the reason of the test-ended "
                        "log line); tests answered \"busy\" at once included")
                    .Register(registry_);
  for (std::size_t i = 0; i < tests_.size(); ++i) {
    const auto reason = static_cast<CloseReason>(i);
    tests_[i] = &tests.Add({{"outcome", std::string(outcomeOf(reason))},
                            {"reason", std::string(proxy::closeReasonName(reason))}});
  }

  auto& running = prometheus::BuildGauge()
                      .Name("iperf3_proxy_tests_running")
                      .Help("Tests that have a backend (running, or setting up on it)")
                      .Register(registry_);
  tests_running_ = &running.Add({});
  auto& queued = prometheus::BuildGauge()
                     .Name("iperf3_proxy_tests_queued")
                     .Help("Tests waiting for a free backend (--queue-timeout)")
                     .Register(registry_);
  tests_queued_ = &queued.Add({});

  setup_seconds_ = &prometheus::BuildHistogram()
                        .Name("iperf3_proxy_test_setup_seconds")
                        .Help("From accepting a test's control connection to TEST_RUNNING")
                        .Register(registry_)
                        .Add({}, kSetupBuckets);

  roles_repaired_ = &prometheus::BuildCounter()
                         .Name("iperf3_proxy_roles_repaired_total")
                         .Help(
                             "Data connections that arrived in an order in which a plain iperf3 "
                             "server would have given them the wrong role (esnet/iperf#2029)")
                         .Register(registry_)
                         .Add({});
  out_of_order_ = &prometheus::BuildCounter()
                       .Name("iperf3_proxy_out_of_order_connections_total")
                       .Help("Data connections that arrived out of the client's creation order")
                       .Register(registry_)
                       .Add({});
  roles_guessed_ = &prometheus::BuildCounter()
                        .Name("iperf3_proxy_roles_guessed_tests_total")
                        .Help(
                            "Tests whose roles were not evident by --role-timeout and were "
                            "paired by source-port order")
                        .Register(registry_)
                        .Add({});

  auto& refused = prometheus::BuildCounter()
                      .Name("iperf3_proxy_connections_refused_total")
                      .Help("Connections that never became part of a test, by reason")
                      .Register(registry_);
  using Refused = ServerObserver::RefusedConnection;
  for (auto why : {Refused::NotACookie, Refused::CookieTimeout, Refused::ClosedEarly,
                   Refused::Evicted, Refused::TestEnded}) {
    connections_refused_[static_cast<std::size_t>(why)] =
        &refused.Add({{"reason", std::string(proxy::refusedConnectionName(why))}});
  }

  auto& dropped = prometheus::BuildCounter()
                      .Name("iperf3_proxy_udp_datagrams_dropped_total")
                      .Help(
                          "UDP datagrams not relayed, by reason (in-flow: counted when the "
                          "test ends)")
                      .Register(registry_);
  using Dropped = ServerObserver::DroppedDatagram;
  for (auto why : {Dropped::NoTest, Dropped::NotConnectMessage}) {
    datagrams_dropped_[static_cast<std::size_t>(why)] =
        &dropped.Add({{"reason", std::string(proxy::droppedDatagramName(why))}});
  }
  datagrams_dropped_.back() = &dropped.Add({{"reason", "in-flow"}});
}

ProxyMetrics::~ProxyMetrics() = default;

void ProxyMetrics::connectionRefused(RefusedConnection why) {
  connections_refused_[static_cast<std::size_t>(why)]->Increment();
}

void ProxyMetrics::datagramDropped(DroppedDatagram why) {
  datagrams_dropped_[static_cast<std::size_t>(why)]->Increment();
}

void ProxyMetrics::testRefused(CloseReason reason) {
  tests_[static_cast<std::size_t>(reason)]->Increment();
}

void ProxyMetrics::testRunning(std::chrono::duration<double> setup) {
  setup_seconds_->Observe(setup.count());
}

void ProxyMetrics::testEnded(const proxy::TestSummary& summary) {
  tests_[static_cast<std::size_t>(summary.reason)]->Increment();
  roles_repaired_->Increment(summary.roles_repaired);
  out_of_order_->Increment(summary.out_of_order);
  if (summary.roles_guessed) {
    roles_guessed_->Increment();
  }
  datagrams_dropped_.back()->Increment(static_cast<double>(summary.udp_dropped));
}

std::vector<prometheus::MetricFamily> ProxyMetrics::stateFamilies(const proxy::Server& server) {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> families;

  auto bytes = family("iperf3_proxy_bytes_total",
                      "Test data relayed, by direction (up: client to server) and protocol; "
                      "running tests included, as of the last second",
                      MetricType::Counter);
  const auto traffic = server.traffic().snapshot();
  addCounter(bytes, {label("direction", "up"), label("protocol", "tcp")},
             static_cast<double>(traffic.tcp_up));
  addCounter(bytes, {label("direction", "down"), label("protocol", "tcp")},
             static_cast<double>(traffic.tcp_down));
  addCounter(bytes, {label("direction", "up"), label("protocol", "udp")},
             static_cast<double>(traffic.udp_up));
  addCounter(bytes, {label("direction", "down"), label("protocol", "udp")},
             static_cast<double>(traffic.udp_down));
  families.push_back(std::move(bytes));

  auto ready =
      family("iperf3_proxy_ready", "1 when some backend can take a test now (what /readyz answers)",
             MetricType::Gauge);
  addGauge(ready, {}, server.backends().canTakeTests() ? 1 : 0);
  families.push_back(std::move(ready));

  auto state =
      family("iperf3_proxy_backend_state",
             "Each backend's state: 1 for the state it is in, 0 for the others", MetricType::Gauge);
  auto tests = family("iperf3_proxy_backend_tests_total", "Tests dispatched to each backend",
                      MetricType::Counter);
  auto faults = family("iperf3_proxy_backend_faults_total",
                       "Times each backend could not take a test it was given, or broke one",
                       MetricType::Counter);
  for (const auto& backend : server.backends().view()) {
    const auto name = label("backend", backend.name);
    const auto kind = label("kind", kindName(backend.kind));
    for (const auto candidate : kBackendStates) {
      addGauge(state, {name, kind, label("state", pool::backendStateName(candidate))},
               candidate == backend.state ? 1 : 0);
    }
    addCounter(tests, {name, kind}, static_cast<double>(backend.tests));
    addCounter(faults, {name, kind}, static_cast<double>(backend.faults));
  }
  families.push_back(std::move(state));
  families.push_back(std::move(tests));
  families.push_back(std::move(faults));
  return families;
}

std::string ProxyMetrics::scrape(const proxy::Server& server) {
  tests_running_->Set(static_cast<double>(server.runningTests()));
  tests_queued_->Set(static_cast<double>(server.queuedTests()));
  auto families = registry_.Collect();
  auto state = stateFamilies(server);
  families.insert(families.end(), std::make_move_iterator(state.begin()),
                  std::make_move_iterator(state.end()));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace iperf3proxy::metrics
