// iperf3-proxy: parse the command line, set up logging, start the backends (embedded or given),
// listen, run the loop, and map the outcome to an exit code.

#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>

#include <event2/event.h>
#include <spdlog/spdlog.h>

#include "app/cli.h"
#include "app/logging.h"
#include "app/sd_notify.h"
#include "app/version.h"
#include "ev/event_loop.h"
#include "ev/io_event.h"
#include "net/address.h"
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

pool::PoolSettings poolSettings(const proxy::ProxySettings& settings) {
  pool::PoolSettings pool;
  pool.queue_timeout = pool::Milliseconds(settings.timeouts.queue_ms);
  pool.queue_length = static_cast<std::size_t>(settings.limits.queue_length);
  pool.relisten_grace = pool::Milliseconds(settings.timeouts.relisten_grace_ms);
  pool.finishing_wait = pool::Milliseconds(settings.timeouts.end_linger_ms);
  return pool;
}

int run(const app::Config& config) {
  ev::EventLoop loop;
  proxy::Server server(loop, config.settings, config.backends, poolSettings(config.settings),
                       config.threads);
  // Before the servers start, so that none of their exits is missed.
  loop.onSignal(SIGCHLD, [&server] { server.onChildSignal(); });
  std::string error;
  int exit_code = 1;
  if (!server.startBackends(&error, &exit_code)) {
    spdlog::error("{}", error);
    return exit_code;
  }
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
  // then exit 0. A second signal: exit at once. The embedded servers are stopped either way.
  bool stopping = false;
  // systemd (Type=notify): ready once listening, stopping once draining. A failure costs only
  // the message.
  const auto notify = [](std::string_view state) {
    std::string notify_error;
    if (!app::notifyServiceManager(state, &notify_error)) {
      spdlog::warn("cannot tell the service manager {}: {}", state, notify_error);
    }
  };
  ev::Timer drain_deadline(loop, [&] {
    spdlog::warn("drain deadline reached; closing the remaining tests");
    loop.stop();
  });
  auto stop = [&] {
    if (stopping) {
      spdlog::info("second signal: stopping now");
      loop.stop();
      return;
    }
    stopping = true;
    notify("STOPPING=1");
    drain_deadline.armMs(config.settings.limits.drain_ms);
    server.drain([&] { loop.stop(); });
  };
  loop.onSignal(SIGINT, stop);
  loop.onSignal(SIGTERM, stop);
  loop.onSignal(SIGHUP, [&server] { server.reloadBackends(); });

  std::string where;
  for (const auto& address : server.boundAddresses()) {
    where += (where.empty() ? "" : ", ") + address.toString();
  }
  spdlog::info(
      "iperf3-proxy {} ready: listening on {} (tcp and udp), backends: {}; {} worker thread{}",
      app::kVersion, where, server.backends().describe(), config.threads,
      config.threads == 1 ? "" : "s");
  notify("READY=1\nSTATUS=listening on " + where);
  loop.run();
  drain_deadline.disarm();
  server.shutdown();
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
