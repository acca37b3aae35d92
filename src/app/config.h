#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "proxy/settings.h"

namespace iperf3proxy::app {

// Everything the command line decides.
struct Config {
  std::uint16_t port = 5201;
  std::optional<std::string> bind;     // default: every address, IPv4 and IPv6
  std::optional<std::string> backend;  // HOST:PORT; default: an embedded iperf3 -s
  std::string iperf3_path = "iperf3";
  std::string log_level = "info";
  proxy::ProxySettings settings;
};

}  // namespace iperf3proxy::app
