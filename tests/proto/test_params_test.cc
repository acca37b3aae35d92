#include "proto/test_params.h"

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include <gtest/gtest.h>

namespace iperf3proxy::proto {
namespace {

// ---- Helpers ----------------------------------------------------------------------------------

TestParams parseOk(std::string_view json) {
  auto parsed = parseTestParams(json);
  if (const auto* failure = std::get_if<ParamsFailure>(&parsed)) {
    ADD_FAILURE() << "unexpected failure " << paramsErrorName(failure->error) << " ("
                  << failure->detail << ") for " << json;
    return {};
  }
  return std::get<TestParams>(std::move(parsed));
}

ParamsFailure parseFail(std::string_view json) {
  auto parsed = parseTestParams(json);
  if (std::holds_alternative<TestParams>(parsed)) {
    ADD_FAILURE() << "unexpectedly accepted: " << json;
    return {ParamsError::InvalidJson, ""};
  }
  return std::get<ParamsFailure>(std::move(parsed));
}

struct Expected {
  Transport transport;
  TestMode mode;
  int streams;
  std::int64_t duration_s;
  std::int64_t omit_s;
  std::string_view client_version;
};

void expectParams(const TestParams& params, const Expected& expected) {
  EXPECT_EQ(transportName(params.transport), transportName(expected.transport));
  EXPECT_EQ(testModeName(params.mode), testModeName(expected.mode));
  EXPECT_EQ(params.streams_per_direction, expected.streams);
  EXPECT_EQ(params.duration_s, expected.duration_s);
  EXPECT_EQ(params.omit_s, expected.omit_s);
  EXPECT_EQ(params.client_version, expected.client_version);
  EXPECT_FALSE(params.role_byte);
}

// ---- Real parameters, captured from Debian's iperf3 3.12 -------------------------------------
// Recorded with testdata/capture_relay.py between `iperf3 -c` and `iperf3 -s`; the same bytes
// are the third line of the matching testdata/iperf3_12_*.hex transcript. Frozen.

struct RealParams {
  std::string_view options;
  std::string_view json;
  Expected expected;
};

const RealParams kIperf312[] = {
    {"(default)",
     R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,"len":131072,)"
     R"("pacing_timer":1000,"client_version":"3.12"})",
     {Transport::Tcp, TestMode::Forward, 1, 10, 0, "3.12"}},
    {"-R",
     R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,"reverse":true,)"
     R"("len":131072,"pacing_timer":1000,"client_version":"3.12"})",
     {Transport::Tcp, TestMode::Reverse, 1, 10, 0, "3.12"}},
    {"-P 4",
     R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":4,"len":131072,)"
     R"("pacing_timer":1000,"client_version":"3.12"})",
     {Transport::Tcp, TestMode::Forward, 4, 10, 0, "3.12"}},
    {"--bidir",
     R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,)"
     R"("bidirectional":true,"len":131072,"pacing_timer":1000,"client_version":"3.12"})",
     {Transport::Tcp, TestMode::Bidirectional, 1, 10, 0, "3.12"}},
    {"--bidir -P 3",
     R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":3,)"
     R"("bidirectional":true,"len":131072,"pacing_timer":1000,"client_version":"3.12"})",
     {Transport::Tcp, TestMode::Bidirectional, 3, 10, 0, "3.12"}},
    {"-u -b 10M",
     R"({"udp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":1,"len":32768,)"
     R"("bandwidth":10000000,"pacing_timer":1000,"client_version":"3.12"})",
     {Transport::Udp, TestMode::Forward, 1, 10, 0, "3.12"}},
    {"-n 50M",
     R"({"tcp":true,"omit":0,"time":0,"num":52428800,"blockcount":0,"parallel":1,"len":131072,)"
     R"("pacing_timer":1000,"client_version":"3.12"})",
     {Transport::Tcp, TestMode::Forward, 1, 0, 0, "3.12"}},
    {"-u --bidir -P 2",
     R"({"udp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":2,)"
     R"("bidirectional":true,"len":32768,"bandwidth":1048576,"pacing_timer":1000,)"
     R"("client_version":"3.12"})",
     {Transport::Udp, TestMode::Bidirectional, 2, 10, 0, "3.12"}},
    {"-t 2 -O 1 -T title --extra-data x",
     R"({"tcp":true,"omit":1,"time":2,"num":0,"blockcount":0,"parallel":1,"len":131072,)"
     R"("pacing_timer":1000,"title":"title","extra_data":"x","client_version":"3.12"})",
     {Transport::Tcp, TestMode::Forward, 1, 2, 1, "3.12"}},
};

TEST(TestParamsTest, RealIperf312Parameters) {
  for (const RealParams& real : kIperf312) {
    SCOPED_TRACE(real.options);
    expectParams(parseOk(real.json), real.expected);
  }
}

TEST(TestParamsTest, StreamCountsPerDirection) {
  const TestParams forward = parseOk(kIperf312[2].json);  // -P 4
  EXPECT_EQ(forward.uploadStreams(), 4);
  EXPECT_EQ(forward.downloadStreams(), 0);
  EXPECT_EQ(forward.totalStreams(), 4);
  const TestParams reverse = parseOk(kIperf312[1].json);  // -R
  EXPECT_EQ(reverse.uploadStreams(), 0);
  EXPECT_EQ(reverse.downloadStreams(), 1);
  EXPECT_EQ(reverse.totalStreams(), 1);
  const TestParams bidir = parseOk(kIperf312[4].json);  // --bidir -P 3
  EXPECT_EQ(bidir.uploadStreams(), 3);
  EXPECT_EQ(bidir.downloadStreams(), 3);
  EXPECT_EQ(bidir.totalStreams(), 6);
}

// ---- Hand-written parameters in the shape of other versions -----------------------------------

TEST(TestParamsTest, Iperf37Shape) {
  // 3.7: no `num`/`blockcount` unless set, `bidirectional` is new, `repeating_payload` is sent.
  expectParams(parseOk(R"({"tcp":true,"omit":0,"time":10,"parallel":2,"bidirectional":true,)"
                       R"("len":131072,"pacing_timer":1000,"repeating_payload":1,)"
                       R"("client_version":"3.7"})"),
               {Transport::Tcp, TestMode::Bidirectional, 2, 10, 0, "3.7"});
  expectParams(parseOk(R"({"udp":true,"omit":2,"time":5,"parallel":1,"reverse":true,)"
                       R"("len":8192,"bandwidth":1048576,"pacing_timer":1000,)"
                       R"("client_version":"3.7"})"),
               {Transport::Udp, TestMode::Reverse, 1, 5, 2, "3.7"});
}

TEST(TestParamsTest, NewerVersionsWithUnknownKeys) {
  // 3.17 .. master: keys this parser does not know must be ignored.
  expectParams(parseOk(R"({"tcp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":8,)"
                       R"("reverse":true,"len":131072,"pacing_timer":1000,"fqrate":0,)"
                       R"("skip_rx_copy":1,"mptcp":true,"zerocopy":1,"dont_fragment":0,)"
                       R"("congestion":"bbr","TOS":32,"flowlabel":0,"window":4194304,"MSS":1400,)"
                       R"("nodelay":true,"get_server_output":1,"udp_counters_64bit":1,)"
                       R"("server_affinity":3,"authtoken":"QUJD","client_version":"3.17.1"})"),
               {Transport::Tcp, TestMode::Reverse, 8, 10, 0, "3.17.1"});
  expectParams(parseOk(R"({"udp":true,"omit":0,"time":10,"num":0,"blockcount":0,"parallel":2,)"
                       R"("bidirectional":true,"len":1460,"bandwidth":1048576,)"
                       R"("pacing_timer":1000,"gso":1,"gso_dg_size":1460,"gso_bf_size":65507,)"
                       R"("gro":1,"gro_bf_size":65507,"skip_rx_copy":0,)"
                       R"("future_key":{"nested":[1,{"x":null}],"tcp":false},)"
                       R"("client_version":"3.21+"})"),
               {Transport::Udp, TestMode::Bidirectional, 2, 10, 0, "3.21+"});
}

TEST(TestParamsTest, DefaultsForAnEmptyObject) {
  const TestParams params = parseOk("{}");
  expectParams(params, {Transport::Tcp, TestMode::Forward, 1, 10, 0, ""});
}

// ---- Flags count by presence ------------------------------------------------------------------

TEST(TestParamsTest, ServerOutputIsRequestedByPresence) {
  EXPECT_FALSE(parseOk(R"({"tcp":true})").get_server_output);
  EXPECT_TRUE(parseOk(R"({"get_server_output":1})").get_server_output);
  // 3.18+ ignores a wrong type, older versions take it: the proxy only prepares to translate a
  // report, so presence is enough either way.
  EXPECT_TRUE(parseOk(R"({"Get_Server_Output":"yes"})").get_server_output);
}

TEST(TestParamsTest, FalseFlagStillCounts) {
  EXPECT_EQ(parseOk(R"({"tcp":true,"reverse":false})").mode, TestMode::Reverse);
  EXPECT_EQ(parseOk(R"({"bidirectional":false})").mode, TestMode::Bidirectional);
  EXPECT_EQ(parseOk(R"({"tcp":true,"udp":false})").transport, Transport::Udp);
  EXPECT_EQ(parseOk(R"({"sctp":false})").transport, Transport::Sctp);
  EXPECT_EQ(parseOk(R"({"tcp":false})").transport, Transport::Tcp);
}

TEST(TestParamsTest, NonBooleanFlagValueIsAmbiguous) {
  for (const std::string_view key : {"tcp", "udp", "sctp", "reverse", "bidirectional"}) {
    for (const std::string_view value : {"1", "0", "\"true\"", "null", "[]", "{}", "1.5"}) {
      const std::string json = "{\"" + std::string(key) + "\":" + std::string(value) + "}";
      SCOPED_TRACE(json);
      const ParamsFailure failure = parseFail(json);
      EXPECT_EQ(failure.error, ParamsError::AmbiguousValue);
      EXPECT_NE(failure.detail.find(key), std::string::npos) << failure.detail;
    }
  }
}

TEST(TestParamsTest, UdpBeatsTcpAndSctpBeatsUdp) {
  EXPECT_EQ(parseOk(R"({"tcp":true,"udp":true})").transport, Transport::Udp);
  EXPECT_EQ(parseOk(R"({"udp":true,"tcp":true})").transport, Transport::Udp);
  EXPECT_EQ(parseOk(R"({"udp":true,"sctp":true})").transport, Transport::Sctp);
  EXPECT_EQ(parseOk(R"({"sctp":true,"tcp":true,"udp":true})").transport, Transport::Sctp);
  EXPECT_EQ(parseOk(R"({"parallel":1})").transport, Transport::Tcp);
}

TEST(TestParamsTest, BidirectionalOverridesReverse) {
  EXPECT_EQ(parseOk(R"({"reverse":true,"bidirectional":true})").mode, TestMode::Bidirectional);
  EXPECT_EQ(parseOk(R"({"bidirectional":true,"reverse":true})").mode, TestMode::Bidirectional);
}

// ---- cJSON key lookup: case-insensitive, first match wins ------------------------------------

TEST(TestParamsTest, KeysAreCaseInsensitive) {
  EXPECT_EQ(parseOk(R"({"tcp":true,"ReVeRsE":true})").mode, TestMode::Reverse);
  EXPECT_EQ(parseOk(R"({"UDP":true})").transport, Transport::Udp);
  EXPECT_EQ(parseOk(R"({"PARALLEL":7})").streams_per_direction, 7);
  EXPECT_EQ(parseOk(R"({"Time":3,"OMIT":2})").duration_s, 3);
  EXPECT_EQ(parseOk(R"({"Client_Version":"3.9"})").client_version, "3.9");
  EXPECT_TRUE(parseOk(R"({"Role_Byte":1})").role_byte);
}

TEST(TestParamsTest, FirstMatchWins) {
  EXPECT_EQ(parseOk(R"({"Reverse":true,"reverse":1})").mode, TestMode::Reverse);
  EXPECT_EQ(parseFail(R"({"reverse":1,"Reverse":true})").error, ParamsError::AmbiguousValue);
  EXPECT_EQ(parseOk(R"({"PARALLEL":2,"parallel":3})").streams_per_direction, 2);
}

TEST(TestParamsTest, FirstOfExactDuplicateKeysWins) {
  // Checked against iperf3 3.12: {"parallel":1,"parallel":2} starts after one stream, and
  // {"parallel":2,"parallel":1} waits for two.
  EXPECT_EQ(parseOk(R"({"parallel":1,"parallel":2})").streams_per_direction, 1);
  EXPECT_EQ(parseOk(R"({"parallel":2,"parallel":1})").streams_per_direction, 2);
  EXPECT_EQ(parseFail(R"({"parallel":200,"parallel":2})").error, ParamsError::BadParallel);
  EXPECT_EQ(parseOk(R"({"parallel":2,"parallel":200})").streams_per_direction, 2);
  EXPECT_EQ(parseOk(R"({"reverse":true,"reverse":1})").mode, TestMode::Reverse);
  EXPECT_EQ(parseOk(R"({"time":5,"time":{"x":1},"time":7})").duration_s, 5);
  // Duplicates inside a nested object are not top-level keys and change nothing.
  EXPECT_EQ(parseOk(R"({"x":{"parallel":5,"parallel":6},"parallel":3})").streams_per_direction, 3);
}

TEST(TestParamsTest, KeyEndsAtAnEmbeddedNul) {
  // cJSON keeps keys as C strings: iperf3 3.12 ran this as a reverse test.
  EXPECT_EQ(parseOk(R"({"tcp":true,"reverse\u0000x":true})").mode, TestMode::Reverse);
  EXPECT_EQ(parseOk(R"({"parallel\u0000":4})").streams_per_direction, 4);
  EXPECT_TRUE(parseOk(R"({"role_byte\u0000junk":0})").role_byte);
  EXPECT_EQ(parseOk(R"({"reversex":true})").mode, TestMode::Forward);
  EXPECT_EQ(parseOk(R"({"\u0000reverse":true})").mode, TestMode::Forward);
}

// ---- parallel ---------------------------------------------------------------------------------

TEST(TestParamsTest, ParallelRange) {
  EXPECT_EQ(parseOk(R"({"parallel":1})").streams_per_direction, 1);
  EXPECT_EQ(parseOk(R"({"parallel":128})").streams_per_direction, 128);
  for (const std::string_view value :
       {"0", "-1", "129", "1000000", "2147483648", "18446744073709551615", "-9223372036854775809",
        "1e300", "-1e300", "0.5", "-0.5", "129.0"}) {
    const std::string json = "{\"parallel\":" + std::string(value) + "}";
    SCOPED_TRACE(json);
    const ParamsFailure failure = parseFail(json);
    EXPECT_EQ(failure.error, ParamsError::BadParallel);
    EXPECT_FALSE(failure.detail.empty());
  }
}

TEST(TestParamsTest, ParallelAsFloatTruncates) {
  EXPECT_EQ(parseOk(R"({"parallel":2.9})").streams_per_direction, 2);
  EXPECT_EQ(parseOk(R"({"parallel":1.0})").streams_per_direction, 1);
  EXPECT_EQ(parseOk(R"({"parallel":128.99})").streams_per_direction, 128);
  EXPECT_EQ(parseOk(R"({"parallel":4e1})").streams_per_direction, 40);
}

TEST(TestParamsTest, ParallelThatIsNotANumberIsAmbiguous) {
  for (const std::string_view value : {"\"4\"", "true", "false", "null", "[4]", "{}"}) {
    const std::string json = "{\"parallel\":" + std::string(value) + "}";
    SCOPED_TRACE(json);
    EXPECT_EQ(parseFail(json).error, ParamsError::AmbiguousValue);
  }
}

// ---- Other keys -------------------------------------------------------------------------------

TEST(TestParamsTest, HugeIntegersElsewhereDoNotBreakParsing) {
  // iperf3 <= 3.13 prints -1 as 18446744073709551615.
  const TestParams params = parseOk(
      R"({"tcp":true,"omit":0,"time":10,"num":18446744073709551615,)"
      R"("blockcount":18446744073709551615,"parallel":2,"fqrate":18446744073709551615,)"
      R"("bandwidth":9223372036854775808,"window":-9223372036854775808,)"
      R"("extra":[18446744073709551615,1e308,-18446744073709551616],"client_version":"3.12"})");
  expectParams(params, {Transport::Tcp, TestMode::Forward, 2, 10, 0, "3.12"});
}

// ---- Numbers, as iperf3 reads them (issue 9) ---------------------------------------------------
// cJSON parses a number with strtod into a double; valueint is that double truncated toward zero
// and saturated to int64; the server's `int` field keeps its low 32 bits. The values marked
// [3.12] were read back from Debian's iperf3 3.12 server (its -J "test_start" section) after
// sending exactly these numbers; the others follow from the same rule.

struct NumberCase {
  std::string_view text;
  std::int64_t as_int;  // what the server's int field holds
};

const NumberCase kNumbers[] = {
    {"1", 1},
    {"-1", -1},
    {"2147483647", 2147483647},
    {"2147483648", -2147483648LL},  // 2^31 [3.12]
    {"-2147483649", 2147483647},    // -2^31 - 1 [3.12]
    {"4294967297", 1},              // 2^32 + 1 [3.12]
    {"-4294967295", 1},             // [3.12]
    {"10000000000", 1410065408},    // 1e10 mod 2^32
    {"1e10", 1410065408},
    {"9007199254740993", 0},       // 2^53 + 1 is 2^53 as a double [3.12]
    {"9007199254740995", 4},       // 2^53 + 3 rounds up to 2^53 + 4
    {"9223372036854775807", -1},   // 2^63 - 1: 2^63 as a double, saturated [3.12]
    {"9223372036854775808", -1},   // 2^63
    {"18446744073709551615", -1},  // 2^64 - 1, 3.13's -1 [3.12]
    {"-9223372036854775808", 0},   // -2^63
    {"-9223372036854775809", 0},   // [3.12]
    {"1e400", -1},                 // +inf, saturated [3.12]
    {"-1e400", 0},                 // [3.12]
    {"1e-400", 0},
    {"2.5", 2},
    {"1.9", 1},                  // [3.12]
    {"-1.9", -1},                // toward zero [3.12]
    {"4294967296.7", 0},         // [3.12]
    {"0.99999999999999999", 1},  // strtod rounds the text to 1.0
    {"-0", 0},
    {"0.5e1", 5},
};

TEST(TestParamsTest, TimeAndOmitAreReadAsTheServerReadsThem) {
  for (const NumberCase& number : kNumbers) {
    SCOPED_TRACE(number.text);
    const TestParams params = parseOk("{\"time\":" + std::string(number.text) +
                                      ",\"omit\":" + std::string(number.text) + "}");
    EXPECT_EQ(params.duration_s, number.as_int);
    EXPECT_EQ(params.omit_s, number.as_int);
  }
}

TEST(TestParamsTest, ParallelIsReadAsTheServerReadsIt) {
  for (const NumberCase& number : kNumbers) {
    SCOPED_TRACE(number.text);
    const std::string json = "{\"parallel\":" + std::string(number.text) + "}";
    if (number.as_int >= 1 && number.as_int <= 128) {
      EXPECT_EQ(parseOk(json).streams_per_direction, number.as_int);
    } else {
      const ParamsFailure failure = parseFail(json);
      EXPECT_EQ(failure.error, ParamsError::BadParallel);
      EXPECT_EQ(failure.detail, "parallel=" + std::to_string(number.as_int) + " is outside 1..128");
    }
  }
  // 2^32 + 128: 128 streams to every server that stores it in an int.
  EXPECT_EQ(parseOk(R"({"parallel":4294967424})").streams_per_direction, 128);
}

// time + omit (the --max-duration check) and (cap + omit) * 1000 (the running deadline) cannot
// overflow: both are held as the server's 32-bit ints, whatever the text said.
TEST(TestParamsTest, DurationArithmeticCannotOverflow) {
  for (const NumberCase& number : kNumbers) {
    SCOPED_TRACE(number.text);
    const TestParams params = parseOk("{\"time\":" + std::string(number.text) +
                                      ",\"omit\":" + std::string(number.text) + "}");
    for (const std::int64_t value : {params.duration_s, params.omit_s}) {
      EXPECT_GE(value, std::numeric_limits<std::int32_t>::min());
      EXPECT_LE(value, std::numeric_limits<std::int32_t>::max());
    }
  }
  const TestParams huge = parseOk(R"({"time":1e400,"omit":9223372036854775807})");
  EXPECT_EQ(huge.duration_s + huge.omit_s, -2);
}

TEST(TestParamsTest, TimeOrOmitThatIsNotANumberIsAmbiguous) {
  // iperf3 <= 3.17 reads them through valueint anyway (true is 1, "5" is 0), 3.18+ ignore them.
  for (const std::string_view key : {"time", "omit"}) {
    for (const std::string_view value : {"\"5\"", "true", "false", "null", "[4]", "{}"}) {
      const std::string json = "{\"" + std::string(key) + "\":" + std::string(value) + "}";
      SCOPED_TRACE(json);
      const ParamsFailure failure = parseFail(json);
      EXPECT_EQ(failure.error, ParamsError::AmbiguousValue);
      EXPECT_EQ(failure.detail,
                std::string(key) + " is not a number; iperf3 versions disagree on it");
    }
  }
}

TEST(TestParamsTest, NumbersCjsonCannotParseAreRefused) {
  // cJSON copies at most 63 characters of a number: a longer one fails iperf3's whole parse.
  const std::string longest = "0." + std::string(61, '0');
  ASSERT_EQ(longest.size(), 63u);
  EXPECT_EQ(parseOk("{\"time\":3,\"x\":" + longest + "}").duration_s, 3);
  const ParamsFailure failure = parseFail("{\"time\":3,\"x\":" + longest + "1}");
  EXPECT_EQ(failure.error, ParamsError::InvalidJson);
  EXPECT_EQ(failure.detail, "a number of more than 63 characters (iperf3 cannot parse it)");
}

TEST(TestParamsTest, NumbersBeyondDoubleRangeDoNotBreakParsing) {
  // Infinite to cJSON, which saturates them; the document stays readable.
  const TestParams params =
      parseOk(R"({"tcp":true,"extra":[1e400,-1e999],"time":3,"num":1E+400,"parallel":2})");
  EXPECT_EQ(params.duration_s, 3);
  EXPECT_EQ(params.streams_per_direction, 2);
  // Digits inside strings are text, whatever their length.
  const TestParams titled = parseOk(R"({"title":"1e400 \"1e999\" )" + std::string(80, '9') +
                                    R"(\\","time":4,"extra_data":"-1e400"})");
  EXPECT_EQ(titled.duration_s, 4);
  // Still not JSON after the number.
  EXPECT_EQ(parseFail(R"({"time":1e400-5})").error, ParamsError::InvalidJson);
}

TEST(TestParamsTest, RoleByteCountsByPresence) {
  EXPECT_FALSE(parseOk(R"({"tcp":true})").role_byte);
  for (const std::string_view value : {"true", "false", "0", "1", "null", "\"v1\"", "{}"}) {
    const std::string json = "{\"tcp\":true,\"role_byte\":" + std::string(value) + "}";
    SCOPED_TRACE(json);
    EXPECT_TRUE(parseOk(json).role_byte);
  }
  EXPECT_EQ(kRoleByteKey, "role_byte");
}

TEST(TestParamsTest, ClientVersionOnlyWhenAString) {
  EXPECT_EQ(parseOk(R"({"client_version":3.12})").client_version, "");
  EXPECT_EQ(parseOk(R"({"client_version":"3.99"})").client_version, "3.99");
}

TEST(TestParamsTest, DeeplyNestedUnknownValue) {
  const std::string json =
      R"({"parallel":2,"x":)" + std::string(20000, '[') + std::string(20000, ']') + "}";
  EXPECT_EQ(parseOk(json).streams_per_direction, 2);
}

// ---- Not a JSON object ------------------------------------------------------------------------

TEST(TestParamsTest, InvalidJson) {
  for (const std::string_view json :
       {"", " ", "{", "}", "[]", "null", "42", "\"tcp\"", "true", R"({"tcp":true,})",
        R"({"tcp":true)", R"({tcp:true})", R"({"tcp":tru})", R"({'tcp':true})"}) {
    SCOPED_TRACE(json);
    const ParamsFailure failure = parseFail(json);
    EXPECT_EQ(failure.error, ParamsError::InvalidJson);
  }
}

TEST(TestParamsTest, Names) {
  EXPECT_EQ(transportName(Transport::Tcp), "tcp");
  EXPECT_EQ(transportName(Transport::Udp), "udp");
  EXPECT_EQ(transportName(Transport::Sctp), "sctp");
  EXPECT_EQ(testModeName(TestMode::Forward), "forward");
  EXPECT_EQ(testModeName(TestMode::Reverse), "reverse");
  EXPECT_EQ(testModeName(TestMode::Bidirectional), "bidir");
  EXPECT_EQ(paramsErrorName(ParamsError::InvalidJson), "invalid JSON");
  EXPECT_EQ(paramsErrorName(ParamsError::AmbiguousValue), "ambiguous value");
  EXPECT_EQ(paramsErrorName(ParamsError::BadParallel), "bad stream count");
}

}  // namespace
}  // namespace iperf3proxy::proto

namespace iperf3proxy::proto {
namespace {

TEST(TestParamsTest, SocketOptionsTheProxyAppliesToItsOwnSockets) {
  const TestParams params =
      parseOk(R"({"tcp":true,"parallel":1,"congestion":"reno","TOS":16,"window":262144,"MSS":1400,)"
              R"("fqrate":100000000,"nodelay":true})");
  EXPECT_EQ(params.congestion, "reno");
  EXPECT_EQ(params.tos, 16);
  EXPECT_EQ(params.window, 262144);
  EXPECT_EQ(params.mss, 1400);
  EXPECT_EQ(params.fq_rate, 100000000U);
  EXPECT_TRUE(params.nodelay);
}

TEST(TestParamsTest, SocketOptionsAreReadAsTheServerReadsThem) {
  // int fields: the low 32 bits; fqrate is a uint64 field: a negative valueint wraps.
  const TestParams params =
      parseOk(R"({"tcp":true,"TOS":4294967312,"window":4295032832,"MSS":1400.9,"fqrate":-8})");
  EXPECT_EQ(params.tos, 16);
  EXPECT_EQ(params.window, 65536);
  EXPECT_EQ(params.mss, 1400);
  EXPECT_EQ(params.fq_rate, std::numeric_limits<std::uint64_t>::max() - 7);
  // 2^63 - 1 is 2^63 as a double: saturated, so an int field holds -1 (not applied).
  EXPECT_FALSE(parseOk(R"({"TOS":9223372036854775807})").tos);
}

TEST(TestParamsTest, SocketOptionsAbsentOrOutOfRangeAreNotApplied) {
  const TestParams params = parseOk(R"({"tcp":true,"TOS":0,"window":-5,"MSS":"x"})");
  EXPECT_FALSE(params.congestion);
  EXPECT_FALSE(params.tos);
  EXPECT_FALSE(params.window);
  EXPECT_FALSE(params.mss);
  EXPECT_FALSE(params.fq_rate);
  EXPECT_FALSE(params.nodelay);
}

TEST(TestParamsTest, BitrateIsReadAsTheServersUint64) {
  // -u (the client always sends its 1 Mbit/s default), -b 100M, a TCP test without -b.
  EXPECT_EQ(parseOk(R"({"udp":true,"bandwidth":1048576})").bitrate_bps, 1048576U);
  EXPECT_EQ(parseOk(R"({"tcp":true,"bandwidth":100000000})").bitrate_bps, 100000000U);
  EXPECT_EQ(parseOk(R"({"tcp":true,"parallel":2})").bitrate_bps, 0U);
  EXPECT_EQ(parseOk(R"({"udp":true,"bandwidth":0})").bitrate_bps, 0U);
  // A negative valueint wraps, as in the server's field; a fraction truncates.
  EXPECT_EQ(parseOk(R"({"bandwidth":-1})").bitrate_bps, std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(parseOk(R"({"bandwidth":1000.9})").bitrate_bps, 1000U);
  // Not a number: no limit, as 3.18+ read it.
  EXPECT_EQ(parseOk(R"({"bandwidth":"100M"})").bitrate_bps, 0U);
}

}  // namespace
}  // namespace iperf3proxy::proto
