// iperf3-proxy: parse the command line, set up logging, start the backends (embedded or given),
// listen, run the loop, and map the outcome to an exit code.

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <event2/event.h>
#include <spdlog/spdlog.h>

#include "app/cli.h"
#include "app/daemon.h"
#include "app/logging.h"
#include "app/pid_file.h"
#include "app/resources.h"
#include "app/sd_notify.h"
#include "app/version.h"
#include "ev/event_loop.h"
#include "ev/io_event.h"
#include "metrics/metrics_endpoint.h"
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

// ---- Running as a service: log file, daemon, pidfile, resources, metrics ----------------------

// What the proxy holds as a service while it runs.
struct Service {
  app::Daemon daemon;
  std::unique_ptr<app::PidFile> pidfile;

  // The proxy listens: whoever started it may stop waiting for errors.
  void ready() {
    app::endStartupReport();
    daemon.ready();
  }
};

// -D runs in "/": paths given relative to where the proxy was started must still work, also
// when SIGHUP reopens or re-reads them.
void makePathsAbsolute(app::Config& config) {
  const auto absolute = [](std::optional<std::string>& path) {
    if (path) {
      std::error_code ignored;
      path = std::filesystem::absolute(*path, ignored).string();
    }
  };
  absolute(config.service.logfile);
  absolute(config.service.pidfile);
  absolute(config.backends.file);
  if (config.backends.iperf3_path.find('/') != std::string::npos) {
    std::optional<std::string> binary = config.backends.iperf3_path;
    absolute(binary);
    config.backends.iperf3_path = *binary;
  }
}

// Everything between the command line and the event loop: the log, -D, -I and the resource
// checks, in that order (the daemon forks before any thread or embedded server exists). Returns
// the code to exit with now, or nullopt to go on.
std::optional<int> startService(app::Config& config, Service& service) {
  if (config.service.daemon) {
    makePathsAbsolute(config);
  }
  std::string error;
  if (!app::setUpLogging(config.log_level, config.service, &error)) {
    std::cerr << "iperf3-proxy: " << error << "\n";
    return 1;
  }
  if (config.service.daemon) {
    if (auto exit_now = service.daemon.detach(&error)) {
      if (!error.empty()) {
        std::cerr << "iperf3-proxy: cannot run as a daemon: " << error << "\n";
      }
      return *exit_now;
    }
    app::reportStartupErrorsTo(service.daemon.reportFd());
  } else if (config.service.logfile) {
    // The log goes to a file: a failed start is still said where the proxy was started.
    app::reportStartupErrorsTo(STDERR_FILENO);
  }
  if (config.service.pidfile) {
    service.pidfile = app::PidFile::create(*config.service.pidfile, &error);
    if (!service.pidfile) {
      spdlog::error("{}", error);
      return 1;
    }
  }
  app::prepareResources(app::ResourceNeeds{
      config.settings.limits.max_tests, config.settings.limits.max_pending, config.threads,
      config.backends.embedded, config.settings.data_path.pipe_size});
  return std::nullopt;
}

// --metrics: the endpoint, listening; nullptr without the option, or with `error` set if it
// cannot listen.
std::unique_ptr<metrics::MetricsEndpoint> startMetrics(const app::Config& config,
                                                       ev::EventLoop& loop,
                                                       proxy::Server& server,
                                                       std::string* error) {
  if (!config.service.metrics) {
    return nullptr;
  }
  const auto spec = app::parseListenSpec(*config.service.metrics, error);  // checked by the CLI
  auto endpoint = std::make_unique<metrics::MetricsEndpoint>(loop, server, app::kVersion);
  bool listening = false;
  if (spec->host) {
    auto address = net::resolveHost(*spec->host, spec->port, error);
    listening = address && endpoint->listen(*address, error);
  } else {
    // Every address: dual stack, or IPv4 only on hosts without IPv6 (as the proxy's own port).
    listening = endpoint->listen(*net::resolveHost("::", spec->port, error), error) ||
                endpoint->listen(*net::resolveHost("0.0.0.0", spec->port, error), error);
  }
  if (!listening) {
    *error = "cannot serve --metrics " + *config.service.metrics + ": " + *error;
    return nullptr;
  }
  spdlog::info("metrics on http://{}/metrics (and /healthz, /readyz)",
               endpoint->boundAddress().toString());
  return endpoint;
}

int run(const app::Config& config, Service& service) {
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
  auto metrics_endpoint = startMetrics(config, loop, server, &error);
  if (config.service.metrics && !metrics_endpoint) {
    spdlog::error("{}", error);
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
  loop.onSignal(SIGHUP, [&server] {
    server.reloadBackends();
    app::reopenLogFile();
  });

  std::string where;
  for (const auto& address : server.boundAddresses()) {
    where += (where.empty() ? "" : ", ") + address.toString();
  }
  spdlog::info(
      "iperf3-proxy {} ready: listening on {} (tcp and udp), backends: {}; {} worker thread{}",
      app::kVersion, where, server.backends().describe(), config.threads,
      config.threads == 1 ? "" : "s");
  service.ready();
  notify("READY=1\nSTATUS=listening on " + where);
  loop.run();
  drain_deadline.disarm();
  server.shutdown();
  spdlog::info("stats: {}", server.statsLine());
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
  auto& config = std::get<app::Config>(parsed);
  Service service;
  if (const auto exit_now = startService(config, service)) {
    spdlog::shutdown();
    return *exit_now;
  }
  const int code = run(config, service);
  service.pidfile.reset();
  spdlog::shutdown();
  libevent_global_shutdown();
  return code;
}
