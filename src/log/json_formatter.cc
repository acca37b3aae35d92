#include "log/json_formatter.h"

#include <time.h>

#include <chrono>
#include <string_view>

#include <nlohmann/json.hpp>
#include <spdlog/details/log_msg.h>
#include <spdlog/fmt/fmt.h>

#include "log/record_fields.h"

namespace iperf3proxy::log {
namespace {

std::string utcTime(std::chrono::system_clock::time_point time) {
  const auto since_epoch = time.time_since_epoch();
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - seconds).count();
  const time_t whole = static_cast<time_t>(seconds.count());
  tm parts{};
  gmtime_r(&whole, &parts);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", parts.tm_year + 1900,
                     parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec,
                     millis);
}

// "[s:ID] rest" -> ID, and `text` becomes "rest".
std::string_view takeTestPrefix(std::string_view& text) {
  constexpr std::string_view kOpen = "[s:";
  if (text.substr(0, kOpen.size()) != kOpen) {
    return {};
  }
  const auto close = text.find(']');
  if (close == std::string_view::npos) {
    return {};
  }
  const std::string_view id = text.substr(kOpen.size(), close - kOpen.size());
  text.remove_prefix(close + 1);
  if (!text.empty() && text.front() == ' ') {
    text.remove_prefix(1);
  }
  return id;
}

}  // namespace

void JsonFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
  std::string_view text(msg.payload.data(), msg.payload.size());
  nlohmann::ordered_json line;
  line["time"] = utcTime(msg.time);
  const auto level = spdlog::level::to_string_view(msg.level);
  line["level"] = std::string_view(level.data(), level.size());
  if (const std::string_view test = takeTestPrefix(text); !test.empty()) {
    line["test"] = test;
  }
  line["message"] = text;
  if (const auto* fields = ScopedFields::current()) {
    for (const auto& [key, value] : fields->items()) {
      line[key] = value;
    }
  }
  const std::string out = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  dest.append(out.data(), out.data() + out.size());
  dest.push_back('\n');
}

std::unique_ptr<spdlog::formatter> JsonFormatter::clone() const {
  return std::make_unique<JsonFormatter>();
}

}  // namespace iperf3proxy::log
