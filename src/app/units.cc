#include "app/units.h"

#include <cctype>
#include <optional>
#include <utility>

namespace iperf3proxy::app {
namespace {

// 128 bits for one product below (GCC and Clang; __extension__ keeps -Wpedantic quiet).
__extension__ using Wide = unsigned __int128;

// A decimal number as written: its whole part and its fraction as digits ("1.25" is 1 and 25
// over 100). Kept exact so that "0.1s" is 100 ms, not 99.
struct Decimal {
  std::uint64_t whole = 0;
  std::uint64_t fraction = 0;
  std::uint64_t fraction_scale = 1;  // 10^(digits after the point)
};

// Digits, optionally a point and more digits; what follows is the unit. At most 18 digits on
// either side, so that nothing below overflows before the explicit checks.
std::optional<Decimal> readDecimal(std::string_view text, std::size_t* used) {
  constexpr int kMaxDigits = 18;
  Decimal number;
  std::size_t i = 0;
  int whole_digits = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) != 0) {
    if (++whole_digits > kMaxDigits) {
      return std::nullopt;
    }
    number.whole = number.whole * 10 + static_cast<std::uint64_t>(text[i] - '0');
    ++i;
  }
  int fraction_digits = 0;
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) != 0) {
      if (++fraction_digits > kMaxDigits) {
        return std::nullopt;
      }
      number.fraction = number.fraction * 10 + static_cast<std::uint64_t>(text[i] - '0');
      number.fraction_scale *= 10;
      ++i;
    }
  }
  if (whole_digits + fraction_digits == 0) {
    return std::nullopt;
  }
  *used = i;
  return number;
}

// number × multiplier, exactly; nullopt when it is not whole or does not fit.
std::optional<std::uint64_t> scale(const Decimal& number, std::uint64_t multiplier, bool exact) {
  std::uint64_t whole = 0;
  if (__builtin_mul_overflow(number.whole, multiplier, &whole)) {
    return std::nullopt;
  }
  // fraction < scale <= 10^18 and multiplier <= 10^12: the product fits in 128 bits.
  const Wide fraction_product = static_cast<Wide>(number.fraction) * multiplier;
  if (exact && fraction_product % number.fraction_scale != 0) {
    return std::nullopt;
  }
  const auto fraction = static_cast<std::uint64_t>(fraction_product / number.fraction_scale);
  std::uint64_t total = 0;
  if (__builtin_add_overflow(whole, fraction, &total)) {
    return std::nullopt;
  }
  return total;
}

}  // namespace

std::variant<long, UnitError> parseDurationMs(std::string_view text, BareUnit bare) {
  std::size_t used = 0;
  const auto number = readDecimal(text, &used);
  if (!number) {
    return UnitError{"'" + std::string(text) +
                     "' is not a duration (a number with ms, s, m or h, e.g. 500ms, 30s, 2m)"};
  }
  const std::string_view unit = text.substr(used);
  std::uint64_t unit_ms = 0;
  if (unit.empty()) {
    unit_ms = bare == BareUnit::Seconds ? 1000 : 1;
  } else if (unit == "ms") {
    unit_ms = 1;
  } else if (unit == "s") {
    unit_ms = 1000;
  } else if (unit == "m") {
    unit_ms = 60'000;
  } else if (unit == "h") {
    unit_ms = 3'600'000;
  } else {
    return UnitError{"'" + std::string(text) + "': unknown unit '" + std::string(unit) +
                     "' (use ms, s, m or h)"};
  }
  const auto ms = scale(*number, unit_ms, /*exact=*/true);
  if (!ms) {
    return UnitError{"'" + std::string(text) + "' is not a whole number of milliseconds"};
  }
  constexpr std::uint64_t kLongest = 100ULL * 365 * 86'400'000;  // a century: no option wants more
  if (*ms > kLongest) {
    return UnitError{"'" + std::string(text) + "' is too long"};
  }
  return static_cast<long>(*ms);
}

std::variant<std::uint64_t, UnitError> parseRateBps(std::string_view text) {
  std::size_t used = 0;
  const auto number = readDecimal(text, &used);
  const std::string_view suffix = text.substr(used);
  std::uint64_t multiplier = 1;
  if (number && suffix.size() == 1) {
    switch (std::tolower(static_cast<unsigned char>(suffix[0]))) {
      case 'k':
        multiplier = 1'000;
        break;
      case 'm':
        multiplier = 1'000'000;
        break;
      case 'g':
        multiplier = 1'000'000'000;
        break;
      case 't':
        multiplier = 1'000'000'000'000;
        break;
      default:
        multiplier = 0;
        break;
    }
  }
  if (!number || suffix.size() > 1 || multiplier == 0) {
    return UnitError{"'" + std::string(text) +
                     "' is not a rate (bits per second, with an optional K, M, G or T, e.g. 100M)"};
  }
  const auto bps = scale(*number, multiplier, /*exact=*/false);
  if (!bps) {
    return UnitError{"'" + std::string(text) + "' is too large"};
  }
  return *bps;
}

}  // namespace iperf3proxy::app
