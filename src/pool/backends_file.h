#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace iperf3proxy::pool {

// The backends of a --backends-file: one HOST:PORT (or [V6]:PORT) per line; blank lines and
// everything after a '#' are ignored. Duplicates are kept once. Pure: the caller reads the file
// and resolves the names.
struct BackendsFileError {
  int line;  // 1-based
  std::string message;
};

std::variant<std::vector<std::string>, BackendsFileError> parseBackendsFile(std::string_view text);

}  // namespace iperf3proxy::pool
