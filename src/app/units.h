#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace iperf3proxy::app {

// What a duration option's bare number means: iperf3's own options (--idle-timeout,
// --server-max-duration) count seconds, the proxy's own deadlines milliseconds.
enum class BareUnit { Milliseconds, Seconds };

// A value the command line refuses, with the reason to print after the option's name.
struct UnitError {
  std::string message;
};

// "500ms", "30s", "2m", "1h", "1.5s", or a bare number in `bare`'s unit. Returns milliseconds.
// Exact: a value that is not a whole number of milliseconds ("1.5ms") is refused, not rounded.
std::variant<long, UnitError> parseDurationMs(std::string_view text, BareUnit bare);

// iperf3's rate syntax (its unit_atof_rate: -b, --server-bitrate-limit): a number with an
// optional k, m, g or t suffix, in either case, counting powers of 1000: "100M" is 100,000,000
// bits per second. Fractions are allowed ("1.5G"); the result is rounded down to whole bits.
std::variant<std::uint64_t, UnitError> parseRateBps(std::string_view text);

}  // namespace iperf3proxy::app
