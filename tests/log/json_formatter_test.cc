#include "log/json_formatter.h"

#include <chrono>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/details/log_msg.h>

#include "log/record_fields.h"

namespace iperf3proxy::log {
namespace {

std::string format(std::string_view text,
                   spdlog::level::level_enum level = spdlog::level::info,
                   std::chrono::system_clock::time_point time = std::chrono::system_clock::now()) {
  const spdlog::details::log_msg msg(time, spdlog::source_loc{}, "test", level,
                                     spdlog::string_view_t(text.data(), text.size()));
  spdlog::memory_buf_t out;
  JsonFormatter().format(msg, out);
  return std::string(out.data(), out.size());
}

nlohmann::ordered_json parse(const std::string& line) {
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line, ending in a newline: " << line;
  return nlohmann::ordered_json::parse(line);
}

TEST(JsonFormatter, PlainLineHasTimeLevelMessageInThatOrder) {
  const auto line = parse(format("listening", spdlog::level::warn));
  ASSERT_EQ(line.size(), 3U);
  auto it = line.begin();
  EXPECT_EQ(it.key(), "time");
  EXPECT_EQ((++it).key(), "level");
  EXPECT_EQ((++it).key(), "message");
  EXPECT_EQ(line["level"], "warning");
  EXPECT_EQ(line["message"], "listening");
}

TEST(JsonFormatter, TimeIsUtcWithMilliseconds) {
  const auto time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1'500));
  EXPECT_EQ(parse(format("x", spdlog::level::info, time))["time"], "1970-01-01T00:00:01.500Z");
  const auto later = std::chrono::system_clock::time_point(std::chrono::seconds(1'767'225'599) +
                                                           std::chrono::microseconds(999'999));
  EXPECT_EQ(parse(format("x", spdlog::level::info, later))["time"], "2025-12-31T23:59:59.999Z");
}

TEST(JsonFormatter, TestPrefixBecomesTheTestField) {
  const auto line = parse(format("[s:kpdjmnui] server -> TEST_RUNNING"));
  EXPECT_EQ(line["test"], "kpdjmnui");
  EXPECT_EQ(line["message"], "server -> TEST_RUNNING");
}

TEST(JsonFormatter, OtherBracketsStayInTheMessage) {
  const auto line = parse(format("[embedded-1 iperf3 -s] Server listening on 5201"));
  EXPECT_FALSE(line.contains("test"));
  EXPECT_EQ(line["message"], "[embedded-1 iperf3 -s] Server listening on 5201");
  EXPECT_EQ(parse(format("[s:unterminated"))["message"], "[s:unterminated");
}

TEST(JsonFormatter, ScopedFieldsAreAddedWhileTheyLive) {
  {
    const ScopedFields outer(nlohmann::ordered_json{{"event", "outer"}});
    {
      const ScopedFields inner(nlohmann::ordered_json{{"event", "test-ended"}, {"bytes_up", 42}});
      const auto line = parse(format("[s:abcdefgh] test ended"));
      EXPECT_EQ(line["event"], "test-ended");
      EXPECT_EQ(line["bytes_up"], 42);
      EXPECT_EQ(line["test"], "abcdefgh");
    }
    EXPECT_EQ(parse(format("after inner"))["event"], "outer");
  }
  EXPECT_FALSE(parse(format("after both")).contains("event"));
}

TEST(JsonFormatter, BytesThatAreNotUtf8AreReplacedNotThrown) {
  // A peer's garbage quoted in a message must not cost the line (or the proxy).
  const std::string garbage = "refused: got \xff\xfe\"\n\x01";
  std::string out;
  ASSERT_NO_THROW(out = format(garbage));
  const auto line = parse(out);
  const std::string message = line["message"];
  EXPECT_NE(message.find("refused: got "), std::string::npos);
  EXPECT_NE(message.find("\"\n\x01"), std::string::npos);
}

}  // namespace
}  // namespace iperf3proxy::log
