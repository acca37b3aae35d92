#include "app/server_args.h"

#include <array>
#include <string_view>

namespace iperf3proxy::app {
namespace {

enum class Takes { Nothing, Value, OptionalValue };

// Why the proxy keeps an option to itself; nullptr for the options it passes on.
constexpr const char* kRole = "the proxy runs its embedded servers with -s itself";
constexpr const char* kAddress =
    "the proxy decides where its embedded servers listen (a loopback port of its own); its own "
    "port and address are -p and -B before --";
constexpr const char* kLifetime =
    "the proxy runs, restarts and stops its embedded servers itself; they must stay in the "
    "foreground and serve test after test";
constexpr const char* kOutput =
    "the embedded servers' output goes to the proxy's log (debug level)";
constexpr const char* kNotServer = "it makes iperf3 print and exit instead of serving tests";

struct LongOption {
  std::string_view name;
  Takes takes;
  // Names that are the same option (getopt_long does not call an abbreviation of both ambiguous).
  char same_as;
  const char* reserved;
};

// iperf3's long options, every version from 3.7 to 3.21 (union; src/iperf_api.c, longopts[]).
constexpr std::array<LongOption, 72> kLongOptions = {{
    {"affinity", Takes::Value, 'A', nullptr},
    {"authorized-users-path", Takes::Value, 0, nullptr},
    {"bandwidth", Takes::Value, 'b', nullptr},
    {"bidir", Takes::Nothing, 0, nullptr},
    {"bind", Takes::Value, 'B', kAddress},
    {"bind-dev", Takes::Value, 0, kAddress},
    {"bitrate", Takes::Value, 'b', nullptr},
    {"blockcount", Takes::Value, 'k', nullptr},
    {"bytes", Takes::Value, 'n', nullptr},
    {"client", Takes::Value, 'c', kRole},
    {"cntl-ka", Takes::OptionalValue, 0, nullptr},
    {"congestion", Takes::Value, 'C', nullptr},
    {"connect-timeout", Takes::Value, 0, nullptr},
    {"cport", Takes::Value, 0, nullptr},
    {"daemon", Takes::Nothing, 'D', kLifetime},
    {"debug", Takes::OptionalValue, 'd', nullptr},
    {"dont-fragment", Takes::Nothing, 0, nullptr},
    {"dscp", Takes::Value, 0, nullptr},
    {"extra-data", Takes::Value, 0, nullptr},
    {"file", Takes::Value, 'F', nullptr},
    {"flowlabel", Takes::Value, 'L', nullptr},
    {"forceflush", Takes::Nothing, 0, nullptr},
    {"format", Takes::Value, 'f', nullptr},
    {"fq-rate", Takes::Value, 0, nullptr},
    {"get-server-output", Takes::Nothing, 0, nullptr},
    {"gsro", Takes::Nothing, 0, nullptr},
    {"help", Takes::Nothing, 'h', kNotServer},
    {"idle-timeout", Takes::Value, 0, nullptr},
    {"interval", Takes::Value, 'i', nullptr},
    {"json", Takes::Nothing, 'J', nullptr},
    {"json-stream", Takes::Nothing, 0, nullptr},
    {"json-stream-full-output", Takes::Nothing, 0, nullptr},
    {"length", Takes::Value, 'l', nullptr},
    {"linux-congestion", Takes::Value, 'C', nullptr},
    {"logfile", Takes::Value, 0, kOutput},
    {"mptcp", Takes::Nothing, 'm', nullptr},
    {"no-delay", Takes::Nothing, 'N', nullptr},
    {"no-fq-socket-pacing", Takes::Nothing, 0, nullptr},
    {"nstreams", Takes::Value, 0, nullptr},
    {"omit", Takes::Value, 'O', nullptr},
    {"one-off", Takes::Nothing, '1', kLifetime},
    {"pacing-timer", Takes::Value, 0, nullptr},
    {"parallel", Takes::Value, 'P', nullptr},
    {"pidfile", Takes::Value, 'I', kLifetime},
    {"port", Takes::Value, 'p', kAddress},
    {"rcv-timeout", Takes::Value, 0, nullptr},
    {"repeating-payload", Takes::Nothing, 0, nullptr},
    {"reverse", Takes::Nothing, 'R', nullptr},
    {"rsa-private-key-path", Takes::Value, 0, nullptr},
    {"rsa-public-key-path", Takes::Value, 0, nullptr},
    {"sctp", Takes::Nothing, 0, nullptr},
    {"server", Takes::Nothing, 's', kRole},
    {"server-bitrate-limit", Takes::Value, 0, nullptr},
    {"server-max-duration", Takes::Value, 0, nullptr},
    {"set-mss", Takes::Value, 'M', nullptr},
    {"skip-rx-copy", Takes::Nothing, 0, nullptr},
    {"snd-timeout", Takes::Value, 0, nullptr},
    {"time", Takes::Value, 't', nullptr},
    {"time-skew-threshold", Takes::Value, 0, nullptr},
    {"timestamps", Takes::OptionalValue, 0, nullptr},
    {"title", Takes::Value, 'T', nullptr},
    {"tos", Takes::Value, 'S', nullptr},
    {"udp", Takes::Nothing, 'u', nullptr},
    {"udp-counters-64bit", Takes::Nothing, 0, nullptr},
    {"use-pkcs1-padding", Takes::Nothing, 0, nullptr},
    {"username", Takes::Value, 0, nullptr},
    {"verbose", Takes::Nothing, 'V', nullptr},
    {"version", Takes::Nothing, 'v', kNotServer},
    {"version4", Takes::Nothing, '4', kAddress},
    {"version6", Takes::Nothing, '6', kAddress},
    {"window", Takes::Value, 'w', nullptr},
    {"xbind", Takes::Value, 'X', nullptr},
}};

// iperf3's short options, as its getopt string has them ("p:f:i:D1VJvsc:ub:t:n:k:l:P:Rw:B:M:N46S:
// L:ZO:F:A:T:C:dI:mhX:"): the letters, and those of them that take a value.
constexpr std::string_view kShortLetters = "pfiD1VJvscubtnklPRwBMN46SLZOFATCdImhX";
constexpr std::string_view kShortWithValue = "pficbtnklPwBMSLOFATCIX";

const char* reservedShort(char letter) {
  switch (letter) {
    case 's':
    case 'c':
      return kRole;
    case 'p':
    case 'B':
    case '4':
    case '6':
      return kAddress;
    case 'D':
    case '1':
    case 'I':
      return kLifetime;
    case 'h':
    case 'v':
      return kNotServer;
    default:
      return nullptr;
  }
}

bool sameOption(const LongOption& a, const LongOption& b) {
  return a.name == b.name || (a.same_as != 0 && a.same_as == b.same_as);
}

// The option a `--name` means to getopt_long: an exact name, else the only option (or several
// names of one option) it abbreviates; nullptr for an unknown name or an ambiguous abbreviation,
// which iperf3 refuses itself. But an abbreviation whose every reading is reserved is reserved:
// whichever iperf3 version reads it, it means one of them (`--bin`: --bind, or --bind-dev).
const LongOption* findLong(std::string_view name, const char** reserved) {
  *reserved = nullptr;
  const LongOption* found = nullptr;
  bool ambiguous = false;
  bool every_reading_reserved = true;
  for (const auto& option : kLongOptions) {
    if (option.name == name) {
      *reserved = option.reserved;
      return &option;
    }
    if (option.name.starts_with(name)) {
      every_reading_reserved = every_reading_reserved && option.reserved != nullptr;
      if (found == nullptr) {
        found = &option;
      } else if (!sameOption(*found, option)) {
        ambiguous = true;
      }
    }
  }
  if (found != nullptr && every_reading_reserved) {
    *reserved = found->reserved;
  }
  return ambiguous ? nullptr : found;
}

std::string refusal(std::string_view written, const char* reason) {
  return "'" + std::string(written) +
         "' cannot be passed to the embedded iperf3 servers: " + reason;
}

}  // namespace

std::optional<std::string> findReservedServerOption(const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--") {
      return std::nullopt;  // getopt stops here: the rest are not options
    }
    if (arg.starts_with("--")) {
      const std::string_view body = arg.substr(2);
      const std::size_t equals = body.find('=');
      const char* reserved = nullptr;
      const LongOption* option = findLong(body.substr(0, equals), &reserved);
      if (reserved != nullptr) {
        return refusal(arg, reserved);
      }
      if (option != nullptr && option->takes == Takes::Value && equals == std::string_view::npos) {
        ++i;  // its value
      }
      continue;  // an unknown or ambiguous name: iperf3 says what it thinks of it
    }
    if (arg.size() < 2 || arg[0] != '-') {
      continue;  // not an option: iperf3 ignores it
    }
    // Bundled short options: each letter is an option until one takes a value, which is the
    // rest of the word or, if nothing is left, the next word.
    for (std::size_t j = 1; j < arg.size(); ++j) {
      const char letter = arg[j];
      if (kShortLetters.find(letter) == std::string_view::npos) {
        break;  // iperf3 says what it thinks of it
      }
      if (const char* reserved = reservedShort(letter)) {
        return refusal("-" + std::string(1, letter), reserved);
      }
      if (kShortWithValue.find(letter) != std::string_view::npos) {
        if (j + 1 == arg.size()) {
          ++i;  // the value is the next word
        }
        break;
      }
    }
  }
  return std::nullopt;
}

}  // namespace iperf3proxy::app
