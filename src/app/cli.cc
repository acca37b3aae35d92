#include "app/cli.h"

#include <algorithm>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "app/version.h"

namespace iperf3proxy::app {

std::variant<Config, ExitNow> parseCommandLine(int argc, char** argv) {
  Config config;
  CLI::App app{
      "iperf3-proxy: sits in front of an unmodified iperf3 server and makes every test work,\n"
      "--bidir included, whatever order the network delivers the data connections in.",
      "iperf3-proxy"};
  app.set_version_flag("-v,--version", std::string("iperf3-proxy ") + kVersion);
  app.add_option("-p,--port", config.port, "TCP port to listen on (default 5201)");
  app.add_option("-B,--bind", config.bind,
                 "address to listen on (default: all addresses, IPv4 and IPv6)");
  const std::string pool_group = "Backends (the pool of iperf3 servers behind the port)";
  app.add_option("--backend", config.backends.given,
                 "an iperf3 server to send tests to, HOST:PORT ([V6]:PORT); repeat for a pool")
      ->group(pool_group);
  app.add_option("--backends-file", config.backends.file,
                 "more backends, one HOST:PORT per line ('#' comments); re-read on SIGHUP")
      ->check(CLI::ExistingFile)
      ->group(pool_group);
  std::optional<int> servers;
  app.add_option("--servers", servers,
                 "start N iperf3 -s on loopback as backends (default 1 when no --backend or "
                 "--backends-file is given, else 0)")
      ->check(CLI::Range(0, 1024))
      ->group(pool_group);
  app.add_option("--iperf3", config.backends.iperf3_path,
                 "iperf3 binary for the embedded servers (default: iperf3 from PATH)")
      ->group(pool_group);
  app.add_option("--log-level", config.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  auto& t = config.settings.timeouts;
  auto& limits = config.settings.limits;
  auto& codec = config.settings.codec;
  const std::string deadlines = "Deadlines (milliseconds)";
  app.add_option("--cookie-timeout", t.cookie_ms, "a new connection must send its cookie within")
      ->check(CLI::Range(100L, 600'000L))
      ->group(deadlines);
  app.add_option("--backend-timeout", t.backend_connect_ms,
                 "connecting to a backend and hearing its first answer; beyond it, another backend")
      ->check(CLI::Range(100L, 600'000L))
      ->group(deadlines);
  app.add_option("--stream-timeout", t.stream_setup_ms,
                 "from CREATE_STREAMS until every data connection is there")
      ->check(CLI::Range(100L, 600'000L))
      ->group(deadlines);
  app.add_option("--role-timeout", t.role_settle_ms,
                 "after the test starts, roles not yet evident are settled by source-port order")
      ->check(CLI::Range(100L, 600'000L))
      ->group(deadlines);
  app.add_option("--idle-timeout", t.idle_ms, "a test in which no byte moves for this long ends")
      ->check(CLI::Range(1'000L, 86'400'000L))
      ->group(deadlines);
  app.add_option("--queue-timeout", t.queue_ms,
                 "how long a new test may wait for a free backend; 0 answers \"busy\" at once")
      ->check(CLI::Range(0L, 3'600'000L))
      ->group(deadlines);
  app.add_option("--drain-timeout", limits.drain_ms,
                 "after SIGTERM/SIGINT, running tests may finish for this long")
      ->check(CLI::Range(0L, 86'400'000L))
      ->group(deadlines);
  const std::string limit_group = "Limits";
  app.add_option("--max-tests", limits.max_tests,
                 "tests at once, running or queued; more are answered \"busy\"")
      ->check(CLI::Range(1, 100'000))
      ->group(limit_group);
  app.add_option("--queue-length", limits.queue_length,
                 "tests that may wait for a free backend (with --queue-timeout)")
      ->check(CLI::Range(1, 100'000))
      ->group(limit_group);
  app.add_option("--max-pending", limits.max_pending,
                 "connections without a cookie yet; beyond it the oldest is dropped")
      ->check(CLI::Range(1, 1'000'000))
      ->group(limit_group);
  app.add_option("--max-duration", limits.max_duration_s,
                 "longest -t (+ -O) in seconds a client may ask for; 0 = no cap")
      ->check(CLI::Range(0L, 86'400L * 365))
      ->group(limit_group);
  app.add_option("--max-params-json", codec.max_params_json, "bytes of a client's parameters")
      ->check(CLI::Range(1024U, 16U << 20))
      ->group(limit_group);
  // Above 128 MiB a results length could no longer be told apart from a state byte sent in its
  // place (see ControlCodec).
  app.add_option("--max-results-json", codec.max_results_json, "bytes of a results message")
      ->check(CLI::Range(1024U, 128U << 20))
      ->group(limit_group);
  addServiceOptions(app, config.service);
  const std::string data_path = "Data path";
  std::optional<int> threads;
  app.add_option("--threads", threads,
                 "event loops that run tests (default: one per core; a test stays on one loop)")
      ->check(CLI::Range(1, 256))
      ->group(data_path);
  app.add_option("--pipe-size", config.settings.data_path.pipe_size,
                 "bytes per splice pipe, two per TCP data connection (default 1048576; the "
                 "kernel may give less)")
      ->check(CLI::Range(4096, 64 << 20))
      ->group(data_path);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return ExitNow{app.exit(help)};
  } catch (const CLI::CallForVersion& version) {
    return ExitNow{app.exit(version)};
  } catch (const CLI::ParseError& error) {
    // One clear line, the way operators' scripts want it.
    std::cerr << "iperf3-proxy: " << error.what() << " (see --help)\n";
    return ExitNow{2};
  }
  const bool given = !config.backends.given.empty() || config.backends.file.has_value();
  config.backends.embedded = servers.value_or(given ? 0 : 1);
  config.threads =
      threads.value_or(std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
  if (config.backends.embedded == 0 && !given) {
    std::cerr << "iperf3-proxy: --servers 0 needs --backend or --backends-file (see --help)\n";
    return ExitNow{2};
  }
  return config;
}

}  // namespace iperf3proxy::app
