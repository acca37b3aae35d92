#include "metrics/proxy_metrics.h"

#include <map>
#include <string>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "proxy/server.h"

namespace iperf3proxy::metrics {
namespace {

using proxy::CloseReason;
using Refused = proxy::ServerObserver::RefusedConnection;

// "name{labels} value" -> value, for every sample of a scrape.
std::map<std::string, double> samples(const std::string& page) {
  std::map<std::string, double> result;
  std::istringstream lines(page);
  std::string line;
  while (std::getline(lines, line)) {
    // Comments (# HELP, # TYPE) and blank lines carry no sample; a sample's labels never hold a
    // space here, so the value is what follows the last space.
    const auto space = line.rfind(' ');
    if (line.empty() || line[0] == '#' || space == std::string::npos || space == 0) {
      continue;
    }
    result[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return result;
}

class ProxyMetricsTest : public testing::Test {
 protected:
  ProxyMetricsTest()
      : server_(loop_, settings_, backendsConfig(), pool::PoolSettings{}, /*threads=*/1),
        metrics_("9.8.7") {
    std::string error;
    int exit_code = 0;
    EXPECT_TRUE(server_.startBackends(&error, &exit_code)) << error;
  }

  static proxy::BackendsConfig backendsConfig() {
    proxy::BackendsConfig config;
    config.given = {"127.0.0.1:9"};
    return config;
  }

  std::map<std::string, double> scrape() { return samples(metrics_.scrape(server_)); }

  ev::EventLoop loop_;
  proxy::ProxySettings settings_;
  proxy::Server server_;
  ProxyMetrics metrics_;
};

TEST_F(ProxyMetricsTest, EveryReasonIsThereFromTheStartWithItsOutcome) {
  const auto page = scrape();
  for (std::size_t i = 0; i < proxy::kCloseReasonCount; ++i) {
    const auto reason = static_cast<CloseReason>(i);
    const std::string key = "iperf3_proxy_tests_total{outcome=\"" + std::string(outcomeOf(reason)) +
                            "\",reason=\"" + std::string(proxy::closeReasonName(reason)) + "\"}";
    ASSERT_TRUE(page.contains(key)) << key;
    EXPECT_EQ(page.at(key), 0);
  }
  EXPECT_EQ(page.at("iperf3_proxy_build_info{version=\"9.8.7\"}"), 1);
  EXPECT_EQ(page.at("iperf3_proxy_tests_running"), 0);
  EXPECT_EQ(page.at("iperf3_proxy_ready"), 1);
  EXPECT_EQ(page.at("iperf3_proxy_backend_state{backend=\"127.0.0.1:9\",kind=\"given\",state="
                    "\"idle\"}"),
            1);
  EXPECT_EQ(page.at("iperf3_proxy_backend_state{backend=\"127.0.0.1:9\",kind=\"given\",state="
                    "\"down\"}"),
            0);
  EXPECT_EQ(page.at("iperf3_proxy_bytes_total{direction=\"up\",protocol=\"udp\"}"), 0);
}

TEST_F(ProxyMetricsTest, OutcomesGroupTheReasons) {
  EXPECT_EQ(outcomeOf(CloseReason::Completed), "completed");
  for (auto reason :
       {CloseReason::ServerBusy, CloseReason::NoBackendFree, CloseReason::QueueTimeout,
        CloseReason::TooManyTests, CloseReason::TooManyClientTests, CloseReason::TooManyStreams,
        CloseReason::BitrateExceeded, CloseReason::BackendUnreachable,
        CloseReason::ParamsRejected}) {
    EXPECT_EQ(outcomeOf(reason), "refused") << proxy::closeReasonName(reason);
  }
  for (auto reason :
       {CloseReason::ClientReset, CloseReason::ServerReset, CloseReason::ProtocolError,
        CloseReason::IdleTimeout, CloseReason::Shutdown}) {
    EXPECT_EQ(outcomeOf(reason), "failed") << proxy::closeReasonName(reason);
  }
}

TEST_F(ProxyMetricsTest, EventsAreCounted) {
  proxy::TestSummary done;
  done.reason = CloseReason::Completed;
  done.roles_repaired = 2;
  done.out_of_order = 3;
  done.udp_dropped = 5;
  done.roles_guessed = true;
  metrics_.testEnded(done);
  metrics_.testEnded(done);
  metrics_.testRefused(CloseReason::NoBackendFree);
  metrics_.connectionRefused(Refused::NotACookie);
  metrics_.connectionRefused(Refused::TestEnded);
  metrics_.connectionRefused(Refused::TestEnded);
  metrics_.datagramDropped(proxy::ServerObserver::DroppedDatagram::NoTest);
  metrics_.testRunning(std::chrono::milliseconds(30));
  const auto page = scrape();
  EXPECT_EQ(page.at("iperf3_proxy_tests_total{outcome=\"completed\",reason=\"completed\"}"), 2);
  EXPECT_EQ(page.at("iperf3_proxy_tests_total{outcome=\"refused\",reason=\"no-backend-free\"}"), 1);
  EXPECT_EQ(page.at("iperf3_proxy_roles_repaired_total"), 4);
  EXPECT_EQ(page.at("iperf3_proxy_out_of_order_connections_total"), 6);
  EXPECT_EQ(page.at("iperf3_proxy_roles_guessed_tests_total"), 2);
  EXPECT_EQ(page.at("iperf3_proxy_connections_refused_total{reason=\"not-a-cookie\"}"), 1);
  EXPECT_EQ(page.at("iperf3_proxy_connections_refused_total{reason=\"test-ended\"}"), 2);
  EXPECT_EQ(page.at("iperf3_proxy_connections_refused_total{reason=\"evicted\"}"), 0);
  EXPECT_EQ(page.at("iperf3_proxy_udp_datagrams_dropped_total{reason=\"no-test\"}"), 1);
  EXPECT_EQ(page.at("iperf3_proxy_udp_datagrams_dropped_total{reason=\"in-flow\"}"), 10);
  EXPECT_EQ(page.at("iperf3_proxy_test_setup_seconds_count"), 1);
  EXPECT_EQ(page.at("iperf3_proxy_test_setup_seconds_bucket{le=\"0.025\"}"), 0);
  EXPECT_EQ(page.at("iperf3_proxy_test_setup_seconds_bucket{le=\"0.05\"}"), 1);
}

}  // namespace
}  // namespace iperf3proxy::metrics
