// libFuzzer target for proto::parseTestParams: any bytes are a candidate params JSON. It must not
// crash; what it accepts must be a test the proxy can run (1..128 streams per direction, stream
// totals consistent with the mode); it must say the same thing twice; and a key the text does not
// mention at all must be left at its default.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "fuzz/fuzz_check.h"
#include "fuzz/params_invariants.h"
#include "proto/test_params.h"

namespace iperf3proxy::fuzz {
namespace {

std::string render(const std::variant<proto::TestParams, proto::ParamsFailure>& parsed) {
  if (const auto* failure = std::get_if<proto::ParamsFailure>(&parsed)) {
    return "failure: " + std::string(proto::paramsErrorName(failure->error)) + " (" +
           failure->detail + ")";
  }
  const auto& p = std::get<proto::TestParams>(parsed);
  return std::string(proto::transportName(p.transport)) + "/" +
         std::string(proto::testModeName(p.mode)) + " P" + std::to_string(p.streams_per_direction) +
         " t" + std::to_string(p.duration_s) + " O" + std::to_string(p.omit_s) + " rb" +
         (p.role_byte ? "1" : "0") + " v[" + p.client_version + "]";
}

char asciiLower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Whether `text` contains `word`, ASCII letters compared without case (as iperf3 compares keys).
bool mentions(std::string_view text, std::string_view word) {
  return std::search(text.begin(), text.end(), word.begin(), word.end(),
                     [](char a, char b) { return asciiLower(a) == asciiLower(b); }) != text.end();
}

// Without a backslash no key can be spelled with escapes, so a key whose name does not occur in
// the text is absent and its value must be the default.
void checkAbsentKeysHaveDefaults(std::string_view json, const proto::TestParams& params) {
  if (json.find('\\') != std::string_view::npos) {
    return;
  }
  const proto::TestParams defaults;
  if (!mentions(json, "udp") && !mentions(json, "sctp")) {
    FUZZ_CHECK(params.transport == proto::Transport::Tcp, "transport without udp or sctp");
  }
  if (!mentions(json, "reverse") && !mentions(json, "bidirectional")) {
    FUZZ_CHECK(params.mode == proto::TestMode::Forward, "mode without reverse or bidirectional");
  }
  if (!mentions(json, "parallel")) {
    FUZZ_CHECK(params.streams_per_direction == defaults.streams_per_direction,
               "streams without parallel");
  }
  if (!mentions(json, "time")) {
    FUZZ_CHECK(params.duration_s == defaults.duration_s, "duration without time");
  }
  if (!mentions(json, "omit")) {
    FUZZ_CHECK(params.omit_s == 0, "omit without omit");
  }
  if (!mentions(json, proto::kRoleByteKey)) {
    FUZZ_CHECK(!params.role_byte, "role byte without role_byte");
  }
  if (!mentions(json, "client_version")) {
    FUZZ_CHECK(params.client_version.empty(), "version without client_version");
  }
}

}  // namespace
}  // namespace iperf3proxy::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace fuzz = iperf3proxy::fuzz;
  namespace proto = iperf3proxy::proto;
  // Bytes as the codec hands them over: a view of its buffer, no terminating NUL.
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  const auto parsed = proto::parseTestParams(json);
  const std::string first = fuzz::render(parsed);
  const std::string again = fuzz::render(proto::parseTestParams(json));
  FUZZ_CHECK(again == first, "parsed differently the second time: " + first + " / " + again);
  if (const auto* params = std::get_if<proto::TestParams>(&parsed)) {
    fuzz::checkTestParams(*params);
    fuzz::checkAbsentKeysHaveDefaults(json, *params);
  } else {
    const auto& failure = std::get<proto::ParamsFailure>(parsed);
    FUZZ_CHECK(!failure.detail.empty(), "failure without a reason: " + first);
    FUZZ_CHECK(proto::paramsErrorName(failure.error) != "unknown", "unnamed failure: " + first);
  }
  return 0;
}
