#include "pool/backends_file.h"

#include <algorithm>

namespace iperf3proxy::pool {
namespace {

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) {
    return {};
  }
  const auto last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

bool looksLikeHostPort(std::string_view entry) {
  const auto colon = entry.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == entry.size()) {
    return false;
  }
  const std::string_view port = entry.substr(colon + 1);
  if (port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  const std::string_view host = entry.substr(0, colon);
  // A bare IPv6 address needs brackets, or its last group would read as the port.
  if (host.find(':') != std::string_view::npos && (host.front() != '[' || host.back() != ']')) {
    return false;
  }
  return std::stoi(std::string(port)) <= 65535 &&
         host.find_first_of(" \t") == std::string_view::npos;
}

}  // namespace

std::variant<std::vector<std::string>, BackendsFileError> parseBackendsFile(std::string_view text) {
  std::vector<std::string> entries;
  int line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const auto newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text = newline == std::string_view::npos ? std::string_view{} : text.substr(newline + 1);
    line = trim(line.substr(0, line.find('#')));
    if (line.empty()) {
      continue;
    }
    if (!looksLikeHostPort(line)) {
      return BackendsFileError{
          line_number, "expected HOST:PORT or [IPV6]:PORT, got '" + std::string(line) + "'"};
    }
    if (std::find(entries.begin(), entries.end(), line) == entries.end()) {
      entries.emplace_back(line);
    }
  }
  return entries;
}

}  // namespace iperf3proxy::pool
