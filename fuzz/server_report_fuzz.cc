// libFuzzer target for proto::translateServerReport: any bytes are a candidate results JSON from
// the server. It must not crash; what it returns must be a JSON object; with no connection views
// it must change nothing but formatting; and translating its own output again must change
// nothing (the client's endpoints below never equal the server's, so a second pass finds only
// endpoints it does not know, or ones it already translated).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_check.h"
#include "proto/server_report.h"

namespace {

using Json = nlohmann::ordered_json;
namespace proto = iperf3proxy::proto;

// The proxy reached the server from 127.0.0.1:40001..40004; the client is 10.0.0.7:50001.. and
// reached the proxy at 192.0.2.1:5201 (hosts and ports in fuzz/server_report.dict).
const std::vector<proto::ConnectionView>& views() {
  static const std::vector<proto::ConnectionView> kViews = [] {
    std::vector<proto::ConnectionView> views;
    for (std::uint16_t i = 1; i <= 4; ++i) {
      views.push_back(
          {{"127.0.0.1", static_cast<std::uint16_t>(40000 + i)},
           {i % 2 == 0 ? "10.0.0.7" : "2001:db8::7", static_cast<std::uint16_t>(50000 + i)},
           {"192.0.2.1", 5201}});
    }
    return views;
  }();
  return kViews;
}

Json parse(std::string_view text) {
  return Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  const auto translated = proto::translateServerReport(input, views());
  if (!translated) {
    return 0;
  }
  const Json output = parse(translated->json);
  FUZZ_CHECK(output.is_object(), "output is not a JSON object: " + translated->json.substr(0, 200));
  FUZZ_CHECK(translated->translated >= 0 && translated->unknown >= 0, "negative counts");

  const auto untouched = proto::translateServerReport(input, {});
  FUZZ_CHECK(untouched.has_value(), "a report readable with views but not without");
  FUZZ_CHECK(untouched->translated == 0, "translated with no views");
  FUZZ_CHECK(parse(untouched->json) == parse(input),
             "changed without views: " + untouched->json.substr(0, 200));
  if (translated->translated == 0) {
    FUZZ_CHECK(output == parse(input),
               "changed without a match: " + translated->json.substr(0, 200));
  }

  const auto again = proto::translateServerReport(translated->json, views());
  FUZZ_CHECK(again.has_value(), "own output not readable: " + translated->json.substr(0, 200));
  FUZZ_CHECK(again->translated == 0, "translated its own output again");
  FUZZ_CHECK(parse(again->json) == output, "second pass changed the output");
  return 0;
}
