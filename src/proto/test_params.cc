#include "proto/test_params.h"

#include <algorithm>
#include <limits>
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

// A number read as cJSON's valueint: truncated toward zero, saturated to int.
std::optional<std::int64_t> readInteger(const Json& value) {
  if (value.is_number_integer() || value.is_number_unsigned()) {
    if (value.is_number_unsigned()) {
      const auto raw = value.get<std::uint64_t>();
      return raw > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                 ? std::numeric_limits<std::int64_t>::max()
                 : static_cast<std::int64_t>(raw);
    }
    return value.get<std::int64_t>();
  }
  if (value.is_number_float()) {
    const double raw = value.get<double>();
    if (raw >= 9.2e18 || raw <= -9.2e18) {
      return raw > 0 ? std::numeric_limits<std::int64_t>::max()
                     : std::numeric_limits<std::int64_t>::min();
    }
    return static_cast<std::int64_t>(raw);
  }
  return std::nullopt;
}

std::optional<std::int64_t> readOptionalInteger(const Json& object, std::string_view key) {
  const Json* value = findKey(object, key);
  if (value == nullptr) {
    return std::nullopt;
  }
  return readInteger(*value);
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
  const Json root = parseKeepingFirstKeys(json);
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

  if (const Json* parallel = findKey(root, "parallel")) {
    const auto count = readInteger(*parallel);
    if (!count) {
      return ParamsFailure{ParamsError::AmbiguousValue, "parallel is not a number"};
    }
    if (*count < 1 || *count > kMaxStreamsPerDirection) {
      return ParamsFailure{ParamsError::BadParallel,
                           "parallel=" + std::to_string(*count) + " is outside 1..128"};
    }
    params.streams_per_direction = static_cast<int>(*count);
  }
  params.duration_s = readOptionalInteger(root, "time").value_or(params.duration_s);
  params.omit_s = readOptionalInteger(root, "omit").value_or(0);
  params.role_byte = findKey(root, kRoleByteKey) != nullptr;
  params.get_server_output = findKey(root, "get_server_output") != nullptr;
  if (const Json* version = findKey(root, "client_version"); version && version->is_string()) {
    params.client_version = version->get<std::string>();
  }
  if (const Json* congestion = findKey(root, "congestion"); congestion && congestion->is_string()) {
    params.congestion = congestion->get<std::string>();
  }
  // Socket option values are only used for the proxy's own sockets; out-of-range ones are left
  // to the server to judge, and the proxy just does not apply them.
  const auto small = [&](std::string_view key) -> std::optional<int> {
    const auto value = readOptionalInteger(root, key);
    if (value && *value > 0 && *value <= std::numeric_limits<int>::max()) {
      return static_cast<int>(*value);
    }
    return std::nullopt;
  };
  params.tos = small("TOS");
  params.window = small("window");
  params.mss = small("MSS");
  if (const auto rate = readOptionalInteger(root, "fqrate"); rate && *rate > 0) {
    params.fq_rate = static_cast<std::uint64_t>(*rate);
  }
  return params;
}

}  // namespace iperf3proxy::proto
