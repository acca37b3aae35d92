// libFuzzer target for proto::translateServerReport: any bytes are a candidate results JSON from
// the server. It must not crash; it returns results exactly when it translated something, and
// then a JSON object; with no connection views it translates nothing and reads the input the same
// way; and it finds nothing to translate in its own output (the client's endpoints below never
// equal the server-side ones).

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
      // 40001 is the control connection (the report's "accepted" entry), the rest data.
      views.push_back(
          {i == 1 ? proto::ConnectionView::Kind::Control : proto::ConnectionView::Kind::Data,
           {"127.0.0.1", static_cast<std::uint16_t>(40000 + i)},
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

  const proto::TranslatedReport translated = proto::translateServerReport(input, views());
  FUZZ_CHECK(translated.translated >= 0 && translated.unknown >= 0, "negative counts");
  FUZZ_CHECK(translated.json.has_value() == (translated.translated > 0),
             "results to forward without a translation, or a translation without results");

  const proto::TranslatedReport untouched = proto::translateServerReport(input, {});
  FUZZ_CHECK(!untouched.json.has_value() && untouched.translated == 0, "translated with no views");
  FUZZ_CHECK(untouched.unreadable == translated.unreadable, "read differently with no views");
  if (!translated.json) {
    return 0;
  }
  const std::string& output = *translated.json;
  FUZZ_CHECK(parse(output).is_object(), "output is not a JSON object: " + output.substr(0, 200));

  const proto::TranslatedReport again = proto::translateServerReport(output, views());
  FUZZ_CHECK(again.unreadable.empty(), "own output not readable: " + output.substr(0, 200));
  FUZZ_CHECK(again.translated == 0, "translated its own output again");
  return 0;
}
