#include "app/cli.h"

#include <iostream>

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
  app.add_option("--backend", config.backend,
                 "the real iperf3 server, HOST:PORT (default: start iperf3 -s on loopback)");
  app.add_option("--iperf3", config.iperf3_path,
                 "iperf3 binary for the embedded server (default: iperf3 from PATH)");
  app.add_option("--log-level", config.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  auto& t = config.settings.timeouts;
  app.add_option("--cookie-timeout", t.cookie_ms,
                 "ms a new connection has to send its 37-byte cookie")
      ->check(CLI::Range(100L, 600'000L));
  app.add_option("--role-timeout", t.role_settle_ms,
                 "ms after the test starts to learn every data connection's role, then best guess")
      ->check(CLI::Range(100L, 600'000L));
  app.add_option("--idle-timeout", t.idle_ms, "ms without any byte moving before a test is dropped")
      ->check(CLI::Range(1'000L, 86'400'000L));
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
  return config;
}

}  // namespace iperf3proxy::app
