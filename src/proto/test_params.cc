#include "proto/test_params.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

#include "proto/wire.h"

namespace iperf3proxy::proto {
namespace {

// ordered_json keeps document order, which "first match wins" needs.
using Json = nlohmann::ordered_json;

char asciiLower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return asciiLower(x) == asciiLower(y);
         });
}

// cJSON keeps keys as C strings: a key decoded from "reverse\u0000x" is "reverse" to iperf3.
std::string_view cKeyName(std::string_view name) {
  return name.substr(0, name.find('\0'));
}

// cJSON's case-insensitive lookup, as iperf3 uses it (iperf3 runs in the C locale, so only ASCII
// letters fold).
const Json* findKey(const Json& object, std::string_view key) {
  for (const auto& [name, value] : object.items()) {
    if (equalsIgnoreCase(cKeyName(name), key)) {
      return &value;
    }
  }
  return nullptr;
}

// A presence-tested flag. iperf3 <= 3.17 counts any value as set; 3.18+ counts only booleans
// (and `false` as set, too). The two agree only on booleans, so anything else is refused rather
// than guessed: the proxy must see the same test the server sees.
std::optional<ParamsFailure> readFlag(const Json& object, std::string_view key, bool& out) {
  const Json* value = findKey(object, key);
  if (value == nullptr) {
    return std::nullopt;
  }
  if (!value->is_boolean()) {
    return ParamsFailure{ParamsError::AmbiguousValue,
                         std::string(key) + " is not a boolean; iperf3 versions disagree on it"};
  }
  out = true;
  return std::nullopt;
}

// Numbers as iperf3 reads them. Its cJSON (1.7.13 in 3.9, 1.7.15 in 3.16..3.20; Debian's 3.12
// checked on the wire) parses a number with strtod into a double and keeps `valueint`: that
// double truncated toward zero and saturated to int64. Every key iperf3's get_parameters reads
// as a number goes through valueint (none through valuedouble, in any of those versions), into
// a field of the test that is an `int` for every key the proxy uses but `fqrate` (uint64): an
// int keeps the low 32 bits, two's complement (as gcc and clang convert). So "time":4294967297
// is a 1-second test to the server, and "parallel":1e400 is -1 streams.
std::int64_t valueInt(const Json& number) {
  double value = 0;
  if (number.is_number_unsigned()) {
    value = static_cast<double>(number.get<std::uint64_t>());  // rounds as strtod would
  } else if (number.is_number_integer()) {
    value = static_cast<double>(number.get<std::int64_t>());
  } else {
    value = number.get<double>();
  }
  constexpr double kTwoTo63 = 9223372036854775808.0;
  if (value >= kTwoTo63) {
    return std::numeric_limits<std::int64_t>::max();
  }
  if (value <= -kTwoTo63) {
    return std::numeric_limits<std::int64_t>::min();
  }
  if (value != value) {
    return 0;  // NaN: no JSON text yields it
  }
  return static_cast<std::int64_t>(value);
}

// What an `int` field of iperf3's test keeps of a valueint.
std::int32_t iperfInt(std::int64_t value_int) {
  return static_cast<std::int32_t>(
      static_cast<std::uint32_t>(static_cast<std::uint64_t>(value_int)));
}

// The text of the parameters as cJSON sees its numbers, for nlohmann to parse. cJSON copies at
// most 63 characters of a number and then expects a delimiter: a longer number makes iperf3
// refuse the whole parameters (nullopt here too). A number beyond double range is infinite to
// cJSON, whose valueint saturates, while nlohmann refuses the document: it becomes the largest
// finite double of its sign, which saturates the same way everywhere it is read.
std::optional<std::string> asCjsonSeesNumbers(std::string_view json) {
  constexpr std::size_t kMaxNumberCharacters = 63;
  const auto in_number = [](char c) {
    return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E';
  };
  std::string text(json);
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      continue;
    }
    if (c != '-' && (c < '0' || c > '9')) {
      continue;
    }
    std::size_t end = i;
    while (end < text.size() && in_number(text[end])) {
      ++end;
    }
    if (end - i > kMaxNumberCharacters) {
      return std::nullopt;
    }
    const std::string number = text.substr(i, end - i);
    char* parsed_end = nullptr;
    const double value = std::strtod(number.c_str(), &parsed_end);
    if (value == HUGE_VAL || value == -HUGE_VAL) {
      const std::string finite = value > 0 ? "1.7976931348623157e308" : "-1.7976931348623157e308";
      const auto parsed = static_cast<std::size_t>(parsed_end - number.c_str());
      text.replace(i, parsed, finite);
      end = i + finite.size() + (end - i - parsed);
    }
    i = end - 1;
  }
  return text;
}

// A key read as a number, as iperf3 reads it. iperf3 <= 3.17 reads any type through valueint
// (true is 1, a string 0); 3.18+ ignore a key whose value is not a number and keep the default.
// For the keys that shape the test the two disagree, so such a value is refused.
struct NumberKey {
  bool present = false;
  std::optional<std::int64_t> value_int;  // nullopt: present, but not a number
};

NumberKey readNumberKey(const Json& object, std::string_view key) {
  const Json* value = findKey(object, key);
  if (value == nullptr) {
    return {};
  }
  if (!value->is_number()) {
    return {true, std::nullopt};
  }
  return {true, valueInt(*value)};
}

ParamsFailure notANumber(std::string_view key) {
  return ParamsFailure{ParamsError::AmbiguousValue,
                       std::string(key) + " is not a number; iperf3 versions disagree on it"};
}

// Parses like cJSON as far as the top-level keys go: cJSON keeps every member and its lookup
// returns the first, whereas nlohmann would overwrite an earlier member with a later one of the
// same name. Dropping later top-level duplicates while parsing keeps the first.
Json parseKeepingFirstKeys(std::string_view json) {
  std::unordered_set<std::string> seen;
  return Json::parse(
      json.begin(), json.end(),
      [&seen](int depth, Json::parse_event_t event, Json& parsed) {
        if (depth == 1 && event == Json::parse_event_t::key) {
          return seen.insert(parsed.get<std::string>()).second;
        }
        return true;
      },
      /*allow_exceptions=*/false);
}

}  // namespace

int TestParams::uploadStreams() const {
  return mode == TestMode::Reverse ? 0 : streams_per_direction;
}

int TestParams::downloadStreams() const {
  return mode == TestMode::Forward ? 0 : streams_per_direction;
}

std::string_view transportName(Transport transport) {
  switch (transport) {
    case Transport::Tcp:
      return "tcp";
    case Transport::Udp:
      return "udp";
    case Transport::Sctp:
      return "sctp";
  }
  return "unknown";
}

std::string_view testModeName(TestMode mode) {
  switch (mode) {
    case TestMode::Forward:
      return "forward";
    case TestMode::Reverse:
      return "reverse";
    case TestMode::Bidirectional:
      return "bidir";
  }
  return "unknown";
}

std::string_view paramsErrorName(ParamsError error) {
  switch (error) {
    case ParamsError::InvalidJson:
      return "invalid JSON";
    case ParamsError::AmbiguousValue:
      return "ambiguous value";
    case ParamsError::BadParallel:
      return "bad stream count";
  }
  return "unknown";
}

std::variant<TestParams, ParamsFailure> parseTestParams(std::string_view json) {
  const std::optional<std::string> text = asCjsonSeesNumbers(json);
  if (!text) {
    return ParamsFailure{ParamsError::InvalidJson,
                         "a number of more than 63 characters (iperf3 cannot parse it)"};
  }
  const Json root = parseKeepingFirstKeys(*text);
  if (root.is_discarded() || !root.is_object()) {
    return ParamsFailure{ParamsError::InvalidJson, "parameters are not a JSON object"};
  }

  TestParams params;
  // iperf3 applies tcp, then udp, then sctp: the last one present wins.
  bool tcp = false;
  bool udp = false;
  bool sctp = false;
  bool reverse = false;
  bool bidirectional = false;
  for (auto [key, flag] :
       {std::pair{"tcp", &tcp}, std::pair{"udp", &udp}, std::pair{"sctp", &sctp},
        std::pair{"reverse", &reverse}, std::pair{"bidirectional", &bidirectional},
        std::pair{"nodelay", &params.nodelay}}) {
    if (auto failure = readFlag(root, key, *flag)) {
      return *failure;
    }
  }
  if (sctp) {
    params.transport = Transport::Sctp;
  } else if (udp) {
    params.transport = Transport::Udp;
  }
  // `bidirectional` is applied after `reverse` and overrides it.
  if (bidirectional) {
    params.mode = TestMode::Bidirectional;
  } else if (reverse) {
    params.mode = TestMode::Reverse;
  }

  if (const NumberKey parallel = readNumberKey(root, "parallel"); parallel.present) {
    if (!parallel.value_int) {
      return ParamsFailure{ParamsError::AmbiguousValue, "parallel is not a number"};
    }
    const std::int32_t count = iperfInt(*parallel.value_int);
    if (count < 1 || count > kMaxStreamsPerDirection) {
      return ParamsFailure{ParamsError::BadParallel,
                           "parallel=" + std::to_string(count) + " is outside 1..128"};
    }
    params.streams_per_direction = count;
  }
  for (auto [key, field] :
       {std::pair{"time", &params.duration_s}, std::pair{"omit", &params.omit_s}}) {
    if (const NumberKey number = readNumberKey(root, key); number.present) {
      if (!number.value_int) {
        return notANumber(key);
      }
      *field = iperfInt(*number.value_int);
    }
  }
  params.role_byte = findKey(root, kRoleByteKey) != nullptr;
  params.get_server_output = findKey(root, "get_server_output") != nullptr;
  if (const Json* version = findKey(root, "client_version"); version && version->is_string()) {
    params.client_version = version->get<std::string>();
  }
  if (const Json* congestion = findKey(root, "congestion"); congestion && congestion->is_string()) {
    params.congestion = congestion->get<std::string>();
  }
  // Socket option values are only used for the proxy's own sockets; values that are not a
  // number or not positive are left to the server to judge, and the proxy just does not apply
  // them.
  const auto positive = [&](std::string_view key) -> std::optional<int> {
    const NumberKey number = readNumberKey(root, key);
    if (number.value_int && iperfInt(*number.value_int) > 0) {
      return iperfInt(*number.value_int);
    }
    return std::nullopt;
  };
  params.tos = positive("TOS");
  params.window = positive("window");
  params.mss = positive("MSS");
  // The server's rate field is a uint64: a negative valueint wraps. A value that is not a
  // number counts as no limit (0), as 3.18+ read it (<= 3.17 read `true` as 1 bit/s): for a cap
  // on the rate that is the stricter reading.
  if (const NumberKey rate = readNumberKey(root, "bandwidth"); rate.value_int) {
    params.bitrate_bps = static_cast<std::uint64_t>(*rate.value_int);
  }
  // fqrate is iperf3's other uint64 field among these: a negative valueint wraps.
  if (const NumberKey rate = readNumberKey(root, "fqrate");
      rate.value_int && *rate.value_int != 0) {
    params.fq_rate = static_cast<std::uint64_t>(*rate.value_int);
  }
  return params;
}

}  // namespace iperf3proxy::proto
