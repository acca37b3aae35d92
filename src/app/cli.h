#pragma once

#include <variant>

#include "app/config.h"

namespace iperf3proxy::app {

// The process should exit now with this code (after --help, --version or a bad argument).
struct ExitNow {
  int code;
};

// Parses argv. Prints help/version to stdout and one-line errors to stderr itself.
std::variant<Config, ExitNow> parseCommandLine(int argc, char** argv);

}  // namespace iperf3proxy::app
