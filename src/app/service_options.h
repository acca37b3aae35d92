#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace CLI {
class App;
}  // namespace CLI

namespace iperf3proxy::app {

enum class LogFormat { Text, Json };

// How the proxy runs as a service: its metrics and health endpoint, its log, daemon mode.
struct ServiceOptions {
  std::optional<std::string> metrics;  // --metrics [ADDR:]PORT
  LogFormat log_format = LogFormat::Text;
  std::optional<std::string> logfile;  // --logfile PATH, reopened on SIGHUP
  bool daemon = false;                 // -D, --daemon
  std::optional<std::string> pidfile;  // -I, --pidfile PATH
};

// Where --metrics listens: PORT (every address, IPv4 and IPv6), ADDR:PORT or [V6]:PORT.
struct ListenSpec {
  std::optional<std::string> host;
  std::uint16_t port = 0;
};

std::optional<ListenSpec> parseListenSpec(std::string_view text, std::string* error);

// Adds the options above to the command line, in a group of their own.
void addServiceOptions(CLI::App& app, ServiceOptions& options);

}  // namespace iperf3proxy::app
