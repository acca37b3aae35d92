#include "app/service_options.h"

#include <charconv>

#include <CLI/CLI.hpp>

namespace iperf3proxy::app {

std::optional<ListenSpec> parseListenSpec(std::string_view text, std::string* error) {
  ListenSpec spec;
  std::string_view port = text;
  if (const auto colon = text.rfind(':'); colon != std::string_view::npos) {
    std::string_view host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string_view::npos) {
      *error = "an IPv6 address needs brackets: [ADDR]:PORT";
      return std::nullopt;
    }
    if (host.empty()) {
      *error = "no address before ':' (give PORT alone for every address)";
      return std::nullopt;
    }
    spec.host = std::string(host);
  }
  unsigned value = 0;
  const auto [end, status] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || status != std::errc() || end != port.data() + port.size() || value > 65535) {
    *error = "'" + std::string(port) + "' is not a port number (0-65535)";
    return std::nullopt;
  }
  spec.port = static_cast<std::uint16_t>(value);
  return spec;
}

void addServiceOptions(CLI::App& app, ServiceOptions& options) {
  const std::string group = "Service (metrics, health, logs, daemon)";
  app.add_option("--metrics", options.metrics,
                 "serve Prometheus /metrics, /healthz and /readyz over HTTP on [ADDR:]PORT "
                 "(PORT alone: every address)")
      ->check([](const std::string& text) {
        std::string error;
        return parseListenSpec(text, &error) ? std::string() : error;
      })
      ->group(group);
  app.add_option_function<std::string>(
         "--log-format",
         [&options](const std::string& format) {
           options.log_format = format == "json" ? LogFormat::Json : LogFormat::Text;
         },
         "text (default), or json: one JSON object per line (time, level, message, test id, "
         "and the fields of each test's record)")
      ->check(CLI::IsMember({"text", "json"}))
      ->group(group);
  app.add_option("--logfile", options.logfile,
                 "write the log to PATH (appended) instead of stderr; reopened on SIGHUP")
      ->group(group);
  app.add_flag("-D,--daemon", options.daemon,
               "run in the background; the command returns once the proxy is ready (0) or "
               "failed to start (its error, and its exit code)")
      ->group(group);
  app.add_option("-I,--pidfile", options.pidfile,
                 "write the proxy's process id to PATH; removed at exit")
      ->group(group);
}

}  // namespace iperf3proxy::app
