#include "app/cli.h"

#include <algorithm>
#include <iostream>
#include <string_view>
#include <thread>

#include <CLI/CLI.hpp>

#include "app/server_args.h"
#include "app/units.h"
#include "app/version.h"

namespace iperf3proxy::app {
namespace {

// A duration option: "500ms", "30s", "2m", "1h", or a bare number in the option's own unit
// (seconds for iperf3's own options, milliseconds for the proxy's), within [min_ms, max_ms].
// The value is stored in milliseconds, or, with `store_seconds`, in whole seconds.
struct DurationRule {
  BareUnit bare;
  long min_ms;
  long max_ms;
  bool store_seconds = false;
};

std::string boundText(long ms, BareUnit bare) {
  return bare == BareUnit::Seconds && ms % 1000 == 0 ? std::to_string(ms / 1000) + "s"
                                                     : std::to_string(ms) + "ms";
}

CLI::Validator durationValidator(DurationRule rule) {
  return CLI::Validator(
      [rule](std::string& value) -> std::string {
        auto parsed = parseDurationMs(value, rule.bare);
        if (const auto* error = std::get_if<UnitError>(&parsed)) {
          return error->message;
        }
        const long ms = std::get<long>(parsed);
        if (ms < rule.min_ms || ms > rule.max_ms) {
          return "'" + value + "' is outside " + boundText(rule.min_ms, rule.bare) + " to " +
                 boundText(rule.max_ms, rule.bare);
        }
        if (rule.store_seconds && ms % 1000 != 0) {
          return "'" + value + "' is not a whole number of seconds";
        }
        value = std::to_string(rule.store_seconds ? ms / 1000 : ms);
        return {};
      },
      "");
}

CLI::Validator rateValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        auto parsed = parseRateBps(value);
        if (const auto* error = std::get_if<UnitError>(&parsed)) {
          return error->message;
        }
        value = std::to_string(std::get<std::uint64_t>(parsed));
        return {};
      },
      "");
}

// argv up to a lone `--`, and the words after it (for every embedded iperf3 -s).
std::vector<std::string> splitAtDoubleDash(int argc, char** argv, int* proxy_argc) {
  std::vector<std::string> rest;
  *proxy_argc = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--") {
      *proxy_argc = i;
      rest.assign(argv + i + 1, argv + argc);
      break;
    }
  }
  return rest;
}

// --allow / --deny: parsed as they are given, so a typo is an argument error at once.
void addAccessOption(CLI::App& app,
                     const std::string& name,
                     proxy::AddressPolicy& access,
                     bool allow,
                     const std::string& group) {
  app.add_option_function<std::vector<std::string>>(
         name,
         [&access, allow](const std::vector<std::string>& blocks) {
           for (const auto& text : blocks) {
             auto parsed = proxy::parseCidr(text);
             if (auto* error = std::get_if<proxy::CidrError>(&parsed)) {
               throw CLI::ValidationError(allow ? "--allow" : "--deny", error->message);
             }
             auto& block = std::get<proxy::Cidr>(parsed);
             allow ? access.allow(std::move(block)) : access.deny(std::move(block));
           }
         },
         allow ? "clients in this address block may test (CIDR, e.g. 10.0.0.0/8 or 2001:db8::/32; "
                 "repeatable); with any --allow, only they may"
               : "clients in this address block may not test (repeatable); the most specific "
                 "block decides, --deny on a tie")
      ->type_name("CIDR")
      ->group(group);
}

}  // namespace

std::variant<Config, ExitNow> parseCommandLine(int argc, char** argv) {
  Config config;
  int proxy_argc = argc;
  config.backends.iperf3_args = splitAtDoubleDash(argc, argv, &proxy_argc);
  CLI::App app{
      "iperf3-proxy: sits in front of an unmodified iperf3 server and makes every test work,\n"
      "--bidir included, whatever order the network delivers the data connections in.",
      "iperf3-proxy"};
  app.footer(
      "Everything after -- goes to every embedded iperf3 -s (e.g. -- --rsa-private-key-path K\n"
      "--authorized-users-path U --server-bitrate-limit 1G); -s, -p, -B, -D, -1, --logfile and\n"
      "the like are the proxy's own. Durations take units (500ms, 30s, 2m); a bare number is\n"
      "seconds for --idle-timeout and --max-duration (as in iperf3), else milliseconds.");
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
  // Durations take units; a bare number keeps the unit each option always had: seconds for
  // --idle-timeout (as iperf3's own --idle-timeout), milliseconds for the proxy's own deadlines.
  const std::string deadlines = "Deadlines (500ms, 30s, 2m, 1h)";
  const auto ms_rule = [](long min_ms, long max_ms) {
    return durationValidator({BareUnit::Milliseconds, min_ms, max_ms});
  };
  app.add_option("--cookie-timeout", t.cookie_ms,
                 "a new connection must send its cookie within (default 10s; bare: ms)")
      ->transform(ms_rule(100, 600'000))
      ->type_name("DURATION")
      ->group(deadlines);
  app.add_option("--backend-timeout", t.backend_connect_ms,
                 "connecting to a backend and hearing its first answer; beyond it, another backend "
                 "(default 3s; bare: ms)")
      ->transform(ms_rule(100, 600'000))
      ->type_name("DURATION")
      ->group(deadlines);
  app.add_option("--stream-timeout", t.stream_setup_ms,
                 "from CREATE_STREAMS until every data connection is there (default 10s; bare: ms)")
      ->transform(ms_rule(100, 600'000))
      ->type_name("DURATION")
      ->group(deadlines);
  app.add_option("--role-timeout", t.role_settle_ms,
                 "after the test starts, roles not yet evident are settled by source-port order "
                 "(default 3s; bare: ms)")
      ->transform(ms_rule(100, 600'000))
      ->type_name("DURATION")
      ->group(deadlines);
  app.add_option("--idle-timeout", t.idle_ms,
                 "a test in which no byte moves for this long ends (default 60s; bare: seconds, "
                 "as iperf3's --idle-timeout)")
      ->transform(durationValidator({BareUnit::Seconds, 1'000, 86'400'000}))
      ->type_name("DURATION")
      ->group(deadlines);
  app.add_option("--queue-timeout", t.queue_ms,
                 "how long a new test may wait for a free backend; 0 answers \"busy\" at once "
                 "(default 0; bare: ms)")
      ->transform(ms_rule(0, 3'600'000))
      ->type_name("DURATION")
      ->group(deadlines);
  app.add_option("--drain-timeout", limits.drain_ms,
                 "after SIGTERM/SIGINT, running tests may finish for this long (default 30s; "
                 "bare: ms)")
      ->transform(ms_rule(0, 86'400'000))
      ->type_name("DURATION")
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
                 "longest -t (+ -O) a client may ask for; 0 = no cap (bare: seconds, as "
                 "iperf3's --server-max-duration)")
      ->transform(durationValidator({BareUnit::Seconds, 0, 86'400'000L * 365, true}))
      ->type_name("DURATION")
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
  app.add_option("--udp-poll-us", config.settings.data_path.udp_poll_us,
                 "a busy UDP flow is read every this many microseconds instead of on each "
                 "arrival: fewer wake-ups, at most this much added latency (default 250; 0 = "
                 "always on arrival)")
      ->check(CLI::Range(0, 10'000))
      ->group(data_path);
  auto& policy = config.settings.policy;
  const std::string policy_group = "Edge policy (each refused before the test starts; 0 = off)";
  app.add_option("--max-streams", policy.max_streams,
                 "data streams one test may open (-P N opens N, --bidir -P N opens 2N)")
      ->check(CLI::Range(0, 256))
      ->group(policy_group);
  app.add_option("--max-bitrate", policy.max_bitrate_bps,
                 "total rate one test may ask for, -b times its streams (iperf3 notation: 100M, "
                 "1G); a test without a -b limit (TCP's default, UDP -b 0) is refused")
      ->transform(rateValidator())
      ->type_name("RATE")
      ->group(policy_group);
  app.add_option("--max-tests-per-client", policy.max_tests_per_client,
                 "tests one client address may have running or waiting; more hear \"busy\"")
      ->check(CLI::Range(0, 100'000))
      ->group(policy_group);
  addAccessOption(app, "--allow", policy.access, /*allow=*/true, policy_group);
  addAccessOption(app, "--deny", policy.access, /*allow=*/false, policy_group);
  try {
    app.parse(proxy_argc, argv);
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
  if (!config.backends.iperf3_args.empty()) {
    if (config.backends.embedded == 0) {
      std::cerr << "iperf3-proxy: the options after -- are for embedded iperf3 servers, and "
                   "there are none (--servers 0); pass them to your own servers (see --help)\n";
      return ExitNow{2};
    }
    if (const auto reserved = findReservedServerOption(config.backends.iperf3_args)) {
      std::cerr << "iperf3-proxy: " << *reserved << " (see --help)\n";
      return ExitNow{2};
    }
  }
  return config;
}

}  // namespace iperf3proxy::app
