#pragma once

#include <optional>
#include <string>
#include <vector>

namespace iperf3proxy::app {

// The arguments after `--` go to every embedded `iperf3 -s` (authentication, bitrate and duration
// limits, affinity, timeouts, ...). Those the proxy sets itself, or that would take the server out
// of the proxy's hands, are refused here: the role (-s, -c), where it listens (-p, -B, --bind-dev,
// -4, -6), its lifetime (-D, -1, -I) and its output (--logfile), and -h/-v, which make iperf3
// print and exit. Options are recognised as iperf3's getopt_long recognises them: bundled short
// options (-sD), attached values (-p5201, --port=5201) and unambiguous abbreviations (--log).
// Everything else is left for iperf3 itself to judge when the proxy starts it.
//
// Returns the message for the first reserved option, or nullopt.
std::optional<std::string> findReservedServerOption(const std::vector<std::string>& args);

}  // namespace iperf3proxy::app
