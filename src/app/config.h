#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "app/service_options.h"
#include "proxy/backends.h"
#include "proxy/settings.h"

namespace iperf3proxy::app {

// Everything the command line decides.
struct Config {
  std::uint16_t port = 5201;
  std::optional<std::string> bind;  // default: every address, IPv4 and IPv6
  // The pool: --backend (repeatable), --backends-file, --servers N embedded iperf3 -s (default 1
  // when neither of the others is given, else 0), --iperf3 PATH.
  proxy::BackendsConfig backends;
  int threads = 1;  // worker loops; the command line's default is one per core
  std::string log_level = "info";
  proxy::ProxySettings settings;
  ServiceOptions service;  // metrics, log format and file, daemon, pidfile
};

}  // namespace iperf3proxy::app
