// iperf3-proxy: parse the command line, set up logging, start the backend (embedded or given),
// listen, run the loop, and map the outcome to an exit code.

#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <memory>

#include <event2/event.h>
#include <spdlog/spdlog.h>

#include "app/cli.h"
#include "app/logging.h"
#include "app/version.h"
#include "ev/event_loop.h"
#include "ev/io_event.h"
#include "net/address.h"
#include "proxy/embedded_server.h"
#include "proxy/server.h"

namespace {

using namespace iperf3proxy;  // NOLINT(google-build-using-namespace): main() only

// The addresses to listen on: the one given, or the IPv6 wildcard in dual-stack mode, or the
// IPv4 wildcard on hosts without IPv6.
std::vector<net::Address> listenAddresses(const app::Config& config, std::string* error) {
  if (config.bind) {
    auto address = net::resolveHost(*config.bind, config.port, error);
    if (!address) {
      return {};
    }
    return {*address};
  }
  return {*net::resolveHost("::", config.port, error)};
}

int run(const app::Config& config) {
  ev::EventLoop loop;
  std::unique_ptr<proxy::EmbeddedServer> embedded;
  std::optional<net::Address> fixed_backend;
  std::string error;
  if (config.backend) {
    fixed_backend = net::resolveHostPort(*config.backend, &error);
    if (!fixed_backend) {
      spdlog::error("--backend: {}", error);
      return 2;
    }
  } else {
    embedded = std::make_unique<proxy::EmbeddedServer>(loop, config.iperf3_path);
    if (!embedded->start(&error)) {
      spdlog::error("{}", error);
      return 1;
    }
    loop.onSignal(SIGCHLD, [&embedded] { embedded->onChildSignal(); });
  }

  proxy::Server server(loop, config.settings, [&]() -> std::optional<net::Address> {
    return fixed_backend ? fixed_backend : embedded->address();
  });
  auto addresses = listenAddresses(config, &error);
  bool listening = !addresses.empty() && server.listen(addresses, &error);
  if (!listening && !config.bind) {
    // No IPv6 on this host: fall back to IPv4 only.
    std::string v4_error;
    listening = server.listen({*net::resolveHost("0.0.0.0", config.port, &v4_error)}, &v4_error);
  }
  if (!listening) {
    spdlog::error("cannot listen: {}", error);
    return 1;
  }

  // First SIGTERM/SIGINT: no new tests, running tests may finish (up to the drain deadline),
  // then exit 0. A second signal: exit at once. The embedded server is stopped either way.
  bool stopping = false;
  ev::Timer drain_deadline(loop, [&] {
    spdlog::warn("drain deadline reached; closing the remaining tests");
    server.shutdown();
    loop.stop();
  });
  auto stop = [&] {
    if (stopping) {
      spdlog::info("second signal: stopping now");
      server.shutdown();
      loop.stop();
      return;
    }
    stopping = true;
    drain_deadline.armMs(config.settings.limits.drain_ms);
    server.drain([&] { loop.stop(); });
  };
  loop.onSignal(SIGINT, stop);
  loop.onSignal(SIGTERM, stop);

  std::string where;
  for (const auto& address : server.boundAddresses()) {
    where += (where.empty() ? "" : ", ") + address.toString();
  }
  const auto backend = fixed_backend ? fixed_backend : embedded->address();
  spdlog::info("iperf3-proxy {} ready: listening on {} (tcp and udp), backend {}", app::kVersion,
               where, backend ? backend->toString() : "starting");
  loop.run();
  drain_deadline.disarm();
  server.shutdown();
  if (embedded) {
    embedded->stop();
  }
  spdlog::info("stats: {}", server.stats().toString());
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A splice or write into a socket the peer has reset must become EPIPE, not a signal.
  ::signal(SIGPIPE, SIG_IGN);
  auto parsed = app::parseCommandLine(argc, argv);
  if (auto* exit_now = std::get_if<app::ExitNow>(&parsed)) {
    return exit_now->code;
  }
  const auto& config = std::get<app::Config>(parsed);
  app::setUpLogging(config.log_level);
  const int code = run(config);
  spdlog::shutdown();
  libevent_global_shutdown();
  return code;
}
