#include "proto/server_report.h"

#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "proto/capture_file.h"
#include "proto/control_codec.h"

namespace iperf3proxy::proto {
namespace {

using Json = nlohmann::ordered_json;

// A test through the proxy: the client 10.0.0.7 reached the proxy at 192.0.2.1:5201; the proxy
// reached the server from 127.0.0.1 (ports 40001..) at 127.0.0.1:5202.
constexpr auto kControl = ConnectionView::Kind::Control;
constexpr auto kData = ConnectionView::Kind::Data;

const std::vector<ConnectionView> kViews = {
    {kControl, {"127.0.0.1", 40001}, {"10.0.0.7", 50000}, {"192.0.2.1", 5201}},
    {kData, {"127.0.0.1", 40002}, {"10.0.0.7", 50001}, {"192.0.2.1", 5201}},
    {kData, {"127.0.0.1", 40003}, {"10.0.0.7", 50002}, {"192.0.2.1", 5201}},
};

Json connected(
    int socket, std::string local_host, int local_port, std::string remote_host, int remote_port) {
  return Json{{"socket", socket},
              {"local_host", local_host},
              {"local_port", local_port},
              {"remote_host", remote_host},
              {"remote_port", remote_port}};
}

TEST(ServerReport, JsonReportNamesTheClientsEndpointsAndKeepsEverythingElse) {
  Json report = {{"start",
                  {{"connected",
                    {connected(5, "127.0.0.1", 5202, "127.0.0.1", 40002),
                     connected(7, "127.0.0.1", 5202, "127.0.0.1", 40003)}},
                   {"version", "iperf 3.12"},
                   {"accepted_connection", {{"host", "127.0.0.1"}, {"port", 40001}}},
                   {"cookie", "abc"}}},
                 {"end", {{"sum_received", {{"bytes", 123456789012}, {"seconds", 1.000052}}}}}};
  const Json results = {{"cpu_util_total", 1.5},
                        {"streams", Json::array({{{"id", 1}, {"bytes", 42}}})},
                        {"server_output_json", report}};

  const auto translated = translateServerReport(results.dump(), kViews);

  ASSERT_TRUE(translated.json.has_value());
  EXPECT_EQ(translated.translated, 3);
  EXPECT_EQ(translated.unknown, 0);
  Json expected = results;
  auto& start = expected["server_output_json"]["start"];
  start["connected"][0] = connected(5, "192.0.2.1", 5201, "10.0.0.7", 50001);
  start["connected"][1] = connected(7, "192.0.2.1", 5201, "10.0.0.7", 50002);
  start["accepted_connection"] = {{"host", "10.0.0.7"}, {"port", 50000}};
  // Same members in the same order, same values (numbers included).
  EXPECT_EQ(Json::parse(*translated.json), expected);
  EXPECT_EQ(Json::parse(*translated.json).dump(), expected.dump());
}

TEST(ServerReport, TextReportRewritesOnlyTheAddressLines) {
  const std::string text =
      "Time: Fri, 27 Nov 2026 17:09:37 GMT\n"
      "Accepted connection from 127.0.0.1, port 40001\n"
      "      Cookie: xftc7f4dcnddt6zjtgxgtpydg4qznt3mok6k\n"
      "[  5] local 127.0.0.1 port 5202 connected to 127.0.0.1 port 40002\n"
      "[  8] local 127.0.0.1 port 5202 connected to 127.0.0.1 port 40003\n"
      "[ ID] Interval           Transfer     Bitrate\n"
      "[  5]   0.00-1.00   sec  1.02 GBytes  8.72 Gbits/sec                  receiver\n";
  const Json results = {{"streams", Json::array()}, {"server_output_text", text}};

  const auto translated = translateServerReport(results.dump(), kViews);

  ASSERT_TRUE(translated.json.has_value());
  EXPECT_EQ(translated.translated, 3);
  EXPECT_EQ(Json::parse(*translated.json)["server_output_text"],
            "Time: Fri, 27 Nov 2026 17:09:37 GMT\n"
            "Accepted connection from 10.0.0.7, port 50000\n"
            "      Cookie: xftc7f4dcnddt6zjtgxgtpydg4qznt3mok6k\n"
            "[  5] local 192.0.2.1 port 5201 connected to 10.0.0.7 port 50001\n"
            "[  8] local 192.0.2.1 port 5201 connected to 10.0.0.7 port 50002\n"
            "[ ID] Interval           Transfer     Bitrate\n"
            "[  5]   0.00-1.00   sec  1.02 GBytes  8.72 Gbits/sec                  receiver\n");
}

TEST(ServerReport, TimestampedLinesKeepTheirTimestamps) {
  const Json results = {
      {"server_output_text",
       "Fri Nov 27 17:09:37 2026 Accepted connection from 127.0.0.1, port 40001\n"
       "Fri Nov 27 17:09:37 2026 [  5] local 127.0.0.1 port 5202 connected to 127.0.0.1 port "
       "40002\n"}};

  const auto translated = translateServerReport(results.dump(), kViews);

  ASSERT_TRUE(translated.json.has_value());
  EXPECT_EQ(translated.translated, 2);
  EXPECT_EQ(Json::parse(*translated.json)["server_output_text"],
            "Fri Nov 27 17:09:37 2026 Accepted connection from 10.0.0.7, port 50000\n"
            "Fri Nov 27 17:09:37 2026 [  5] local 192.0.2.1 port 5201 connected to 10.0.0.7 port "
            "50001\n");
}

TEST(ServerReport, IPv6ClientBehindAnIPv4Backend) {
  const std::vector<ConnectionView> views = {
      {kControl, {"127.0.0.1", 40001}, {"2001:db8::7", 50000}, {"2001:db8::1", 5201}},
      {kData, {"127.0.0.1", 40002}, {"2001:db8::7", 50001}, {"2001:db8::1", 5201}}};
  const Json results = {{"server_output_text",
                         "Accepted connection from 127.0.0.1, port 40001\n"
                         "[  5] local 127.0.0.1 port 5202 connected to 127.0.0.1 port 40002\n"}};

  const auto translated = translateServerReport(results.dump(), views);

  ASSERT_TRUE(translated.json.has_value());
  EXPECT_EQ(Json::parse(*translated.json)["server_output_text"],
            "Accepted connection from 2001:db8::7, port 50000\n"
            "[  5] local 2001:db8::1 port 5201 connected to 2001:db8::7 port 50001\n");
}

TEST(ServerReport, ConnectionsTheProxyDidNotRelayAreCountedAndLeftAlone) {
  const Json results = {{"server_output_text",
                         "[  5] local 127.0.0.1 port 5202 connected to 127.0.0.1 port 40002\n"
                         "[  6] local 127.0.0.1 port 5202 connected to 127.0.0.1 port 49999\n"
                         "[  7] local 127.0.0.1 port 5202 connected to 127.0.0.9 port 40003\n"}};

  const auto translated = translateServerReport(results.dump(), kViews);

  ASSERT_TRUE(translated.json.has_value());
  EXPECT_EQ(translated.translated, 1);
  EXPECT_EQ(translated.unknown, 2);
  EXPECT_EQ(Json::parse(*translated.json)["server_output_text"],
            "[  5] local 192.0.2.1 port 5201 connected to 10.0.0.7 port 50001\n"
            "[  6] local 127.0.0.1 port 5202 connected to 127.0.0.1 port 49999\n"
            "[  7] local 127.0.0.1 port 5202 connected to 127.0.0.9 port 40003\n");
}

TEST(ServerReport, LinesThatOnlyLookLikeAddressLinesStayAsTheyAre) {
  const std::string text =
      "Accepted connection from 127.0.0.1, port forty\n"
      "[  5] local 127.0.0.1 port 5202 connected to 127.0.0.1 port 99999\n"
      "[  5] local 127.0.0.1 port 5202 connected to 127.0.0.1\n"
      "local 127.0.0.1 port 5202 connected to 127.0.0.1 port 40002 and more\n"
      "no newline at the end";
  const Json results = {{"server_output_text", text}};

  const auto translated = translateServerReport(results.dump(), kViews);

  // Nothing matched: the server's bytes go through as they are.
  EXPECT_FALSE(translated.json.has_value());
  EXPECT_EQ(translated.translated, 0);
  EXPECT_TRUE(translated.unreadable.empty());
}

TEST(ServerReport, NothingToTranslateOrNothingReadableLeavesTheServersBytes) {
  const auto outcome = [](std::string_view json) {
    return translateServerReport(json, kViews);
  };
  EXPECT_FALSE(outcome(R"({"streams":[]})").json.has_value());
  EXPECT_TRUE(outcome(R"({"streams":[]})").unreadable.empty());
  for (const std::string_view bad : {std::string_view("not json"), std::string_view("[1,2]"),
                                     std::string_view(R"({"server_output_text":"x"} trailing)"),
                                     // Invalid UTF-8 (a Latin-1 byte).
                                     std::string_view("{\"server_output_text\":\"caf\xe9\"}")}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(outcome(bad).json.has_value());
    EXPECT_FALSE(outcome(bad).unreadable.empty());
  }
}

TEST(ServerReport, DeeplyNestedResultsAreNotParsed) {
  // Re-serialising recurses once per level: a report this deep is forwarded as it is.
  const std::string deep = R"({"server_output_text":"Accepted connection from 127.0.0.1, port )"
                           R"(40001","x":)" +
                           std::string(kMaxReportDepth, '[') + std::string(kMaxReportDepth, ']') +
                           "}";
  EXPECT_EQ(translateServerReport(deep, kViews).unreadable, "nested too deeply");
  // Brackets inside strings do not count.
  const std::string quoted = R"({"server_output_text":"Accepted connection from 127.0.0.1, port )"
                             R"(40001","x":")" +
                             std::string(1000, '[') + R"(\\\"")" + "}";
  EXPECT_EQ(translateServerReport(quoted, kViews).translated, 1);
}

TEST(ServerReport, TheControlConnectionAndAFlowWithTheSamePortAreNotConfused) {
  // A UDP flow's port number may equal the TCP control connection's.
  const std::vector<ConnectionView> views = {
      {kControl, {"127.0.0.1", 40001}, {"10.0.0.7", 50000}, {"192.0.2.1", 5201}},
      {kData, {"127.0.0.1", 40001}, {"10.0.0.7", 50001}, {"192.0.2.1", 5201}}};
  const Json results = {{"server_output_text",
                         "Accepted connection from 127.0.0.1, port 40001\n"
                         "[  5] local 127.0.0.1 port 5202 connected to 127.0.0.1 port 40001\n"}};

  const auto translated = translateServerReport(results.dump(), views);

  ASSERT_TRUE(translated.json.has_value());
  EXPECT_EQ(Json::parse(*translated.json)["server_output_text"],
            "Accepted connection from 10.0.0.7, port 50000\n"
            "[  5] local 192.0.2.1 port 5201 connected to 10.0.0.7 port 50001\n");
}

TEST(ServerReport, MalformedJsonReportPartsAreSkipped) {
  const Json results = {{"server_output_json",
                         {{"start",
                           {{"accepted_connection", {{"host", 5}, {"port", "x"}}},
                            {"connected",
                             {1, connected(5, "127.0.0.1", 5202, "127.0.0.1", 70000),
                              Json{{"remote_host", "127.0.0.1"}, {"remote_port", 40002}}}}}}}}};

  const auto translated = translateServerReport(results.dump(), kViews);

  ASSERT_TRUE(translated.json.has_value());
  EXPECT_EQ(translated.translated, 1);
  const Json out = Json::parse(*translated.json)["server_output_json"]["start"];
  EXPECT_EQ(out["accepted_connection"],
            results["server_output_json"]["start"]["accepted_connection"]);
  EXPECT_EQ(out["connected"][0], 1);
  EXPECT_EQ(out["connected"][1]["remote_port"], 70000);
  EXPECT_EQ(out["connected"][2]["remote_port"], 50001);
  EXPECT_EQ(out["connected"][2]["local_host"], "192.0.2.1");
}

// The server's results of a real iperf3 3.12 test, as the codec captures them.
std::string capturedServerResults(std::string_view capture) {
  const auto reads = testing::readCapture(capture);
  EXPECT_TRUE(reads.has_value()) << capture;
  ControlCodec codec;
  codec.captureServerResults();
  std::string json;
  for (const testing::CapturedRead& read : reads.value_or(std::vector<testing::CapturedRead>{})) {
    const FeedResult result =
        read.side == Side::Client ? codec.feedClient(read.bytes) : codec.feedServer(read.bytes);
    EXPECT_FALSE(result.failure.has_value());
    for (const ControlEvent& event : result.events) {
      if (const auto* results = std::get_if<ResultsReceived>(&event); results && results->json) {
        json = *results->json;
      }
    }
  }
  EXPECT_FALSE(json.empty()) << capture;
  return json;
}

// Reads "HOST<separator>PORT" at `at` in `line`, the way iperf3 prints a peer.
std::optional<Endpoint> endpointAt(std::string_view line,
                                   std::size_t at,
                                   std::string_view separator) {
  const std::size_t separator_at = line.find(separator, at);
  if (separator_at == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view port = line.substr(separator_at + separator.size());
  if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos) {
    return std::nullopt;
  }
  return Endpoint{std::string(line.substr(at, separator_at - at)),
                  static_cast<std::uint16_t>(std::stoi(std::string(port)))};
}

// Every peer the server's report names (the server's "remote" side), in order of appearance.
std::vector<Endpoint> peersIn(const Json& results) {
  std::vector<Endpoint> found;
  if (results.contains("server_output_json")) {
    const Json& start = results["server_output_json"]["start"];
    found.push_back({start["accepted_connection"]["host"].get<std::string>(),
                     start["accepted_connection"]["port"].get<std::uint16_t>()});
    for (const Json& connection : start["connected"]) {
      found.push_back({connection["remote_host"].get<std::string>(),
                       connection["remote_port"].get<std::uint16_t>()});
    }
    return found;
  }
  std::istringstream text(results["server_output_text"].get<std::string>());
  for (std::string line; std::getline(text, line);) {
    for (const auto& [lead, separator] : {std::pair{"Accepted connection from ", ", port "},
                                          std::pair{" connected to ", " port "}}) {
      const std::string_view marker(lead);
      if (const std::size_t at = line.find(marker); at != std::string::npos) {
        if (auto peer = endpointAt(line, at + marker.size(), separator)) {
          found.push_back(*peer);
        }
      }
    }
  }
  return found;
}

std::string_view reportKey(const Json& results) {
  return results.contains("server_output_text") ? "server_output_text" : "server_output_json";
}

class RealServerReport : public ::testing::TestWithParam<std::string_view> {};

TEST_P(RealServerReport, EveryConnectionOfTheReportIsTranslated) {
  const std::string results = capturedServerResults(GetParam());
  const Json original = Json::parse(results);
  const std::vector<Endpoint> named = peersIn(original);
  ASSERT_EQ(named.size(), 3u) << original.dump();  // the control connection and two streams
  std::vector<ConnectionView> views;
  std::vector<Endpoint> clients;
  for (std::size_t i = 0; i < named.size(); ++i) {
    clients.push_back({"2001:db8::7", static_cast<std::uint16_t>(60000 + i)});
    // The report names the control connection first.
    views.push_back({i == 0 ? kControl : kData, named[i], clients.back(), {"2001:db8::1", 5201}});
  }

  const auto translated = translateServerReport(results, views);

  ASSERT_TRUE(translated.json.has_value());
  EXPECT_EQ(translated.translated, 3);
  EXPECT_EQ(translated.unknown, 0);
  Json out = Json::parse(*translated.json);
  EXPECT_EQ(peersIn(out), clients);
  // The server's own address and port (the recording's 127.0.0.1:5301) are gone too.
  EXPECT_EQ(out[std::string(reportKey(out))].dump().find("5301"), std::string::npos);
  // Nothing else changed: the streams, the CPU figures and the rest of the results.
  out.erase(std::string(reportKey(out)));
  Json rest = original;
  rest.erase(std::string(reportKey(rest)));
  EXPECT_EQ(out, rest);
}

INSTANTIATE_TEST_SUITE_P(Iperf312,
                         RealServerReport,
                         ::testing::Values("iperf3_12_server_output_json_p2",
                                           "iperf3_12_server_output_text_udp_p2"),
                         [](const ::testing::TestParamInfo<std::string_view>& test_info) {
                           return std::string(test_info.param);
                         });

}  // namespace
}  // namespace iperf3proxy::proto
