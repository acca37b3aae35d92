// Component test: ThrottledLog with a real event loop (its count line comes from a timer) and
// spdlog captured. The contract: every event has exactly one line of its own at debug level
// (a warning or a debug line); at warning level the first event of an interval is shown and one
// line counts the rest, so a flood costs at most two warnings per interval.

#include "proxy/throttled_log.h"

#include <chrono>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "log_capture.h"
#include "scripted_peers.h"

namespace iperf3proxy::proxy {
namespace {

using spdlog::level::debug;
using spdlog::level::warn;
using testing::runFor;
using testing::runUntil;

constexpr auto kInterval = std::chrono::milliseconds(200);

std::string event(int i) {
  return "refused connection from 127.0.0.1:" + std::to_string(40000 + i) + ": garbage";
}

// The counts of the "... and N more" lines.
int counted(const testing::LogCapture& log) {
  constexpr std::string_view kPrefix = "... and ";
  constexpr std::string_view kSuffix = " more refused connections within 200 ms";
  int total = 0;
  for (const auto& line : log.matching("more refused connections", warn)) {
    const std::string& text = line.text;
    const auto suffix = text.find(kSuffix);
    EXPECT_TRUE(text.starts_with(kPrefix) && suffix != std::string::npos) << text;
    if (text.starts_with(kPrefix) && suffix != std::string::npos) {
      total += std::stoi(text.substr(kPrefix.size(), suffix - kPrefix.size()));
    }
  }
  return total;
}

class ThrottledLogTest : public ::testing::Test {
 protected:
  ev::EventLoop loop_;
  testing::LogCapture log_;
  ThrottledLog throttled_{loop_, "refused connections", kInterval};
};

TEST_F(ThrottledLogTest, AFloodIsOneWarningAndACountAndEveryEventStaysAtDebugLevel) {
  constexpr int kEvents = 100;
  for (int i = 0; i < kEvents; ++i) {
    throttled_.log(event(i));
  }
  ASSERT_TRUE(runUntil(loop_, [this] { return !log_.matching("more refused", warn).empty(); }));
  // Every event: exactly one line with its text, at warning or debug level.
  int warned = 0;
  for (int i = 0; i < kEvents; ++i) {
    const auto lines = log_.matching(event(i));
    ASSERT_EQ(lines.size(), 1U) << event(i);
    EXPECT_TRUE(lines[0].level == warn || lines[0].level == debug);
    warned += lines[0].level == warn;
  }
  EXPECT_EQ(warned, 1);
  EXPECT_EQ(log_.matching(event(0), warn).size(), 1U);  // the first one is shown
  // The count accounts for every event that was not shown.
  EXPECT_EQ(warned + counted(log_), kEvents);
  EXPECT_EQ(log_.matching("", warn).size(), 2U);
  // Nothing more once the flood is over.
  runFor(loop_, 2 * kInterval.count());
  EXPECT_EQ(log_.matching("", warn).size(), 2U);
}

TEST_F(ThrottledLogTest, AnEventAfterAQuietIntervalIsShownAgain) {
  throttled_.log(event(0));
  runFor(loop_, kInterval.count() + 50);
  throttled_.log(event(1));
  runFor(loop_, kInterval.count() + 50);
  EXPECT_EQ(log_.matching(event(0), warn).size(), 1U);
  EXPECT_EQ(log_.matching(event(1), warn).size(), 1U);
  EXPECT_EQ(log_.matching("more refused", warn).size(), 0U);
}

TEST_F(ThrottledLogTest, ALongFloodIsAtMostTwoWarningsPerIntervalAndAllAccountedFor) {
  // Events every few milliseconds over several intervals.
  int events = 0;
  const auto start = std::chrono::steady_clock::now();
  ev::Timer tick(loop_, [&] {
    throttled_.log(event(events++));
    tick.armMs(3);
  });
  tick.armMs(0);
  runFor(loop_, 5 * kInterval.count());
  tick.disarm();
  runFor(loop_, 2 * kInterval.count());  // the last count line
  const auto elapsed = std::chrono::steady_clock::now() - start;
  const long intervals = elapsed / kInterval + 1;
  const auto warnings = log_.matching("", warn);
  int shown = 0;
  for (int i = 0; i < events; ++i) {
    const auto lines = log_.matching(event(i));
    ASSERT_EQ(lines.size(), 1U) << event(i);
    shown += lines[0].level == warn;
  }
  EXPECT_EQ(shown + counted(log_), events);
  EXPECT_LE(static_cast<long>(warnings.size()), 2 * intervals)
      << events << " events, " << warnings.size() << " warnings";
  EXPECT_GT(events, static_cast<int>(warnings.size()));
}

}  // namespace
}  // namespace iperf3proxy::proxy
