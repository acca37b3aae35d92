// Component test: PollTicker on a real event loop and timerfd.

#include "ev/poll_ticker.h"

#include <chrono>
#include <functional>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "ev/io_event.h"

namespace iperf3proxy::ev {
namespace {

using std::chrono::microseconds;

struct Counting : PollTicker::Listener {
  void onTick() override {
    ++ticks;
    if (on_tick) {
      on_tick();
    }
  }

  int ticks = 0;
  std::function<void()> on_tick;
};

// Runs the loop for about `ms` milliseconds.
void runFor(EventLoop& loop, long ms) {
  Timer stop(loop, [&] { loop.stop(); });
  stop.armMs(ms);
  loop.run();
}

TEST(PollTickerTest, ZeroIntervalIsOff) {
  EventLoop loop;
  PollTicker ticker(loop, microseconds{0});
  EXPECT_FALSE(ticker.available());
  Counting listener;
  ticker.add(&listener);
  EXPECT_EQ(ticker.listeners(), 0U);
}

TEST(PollTickerTest, TicksEveryListenerUntilRemoved) {
  EventLoop loop;
  PollTicker ticker(loop, microseconds{1000});
  ASSERT_TRUE(ticker.available());
  Counting a;
  Counting b;
  ticker.add(&a);
  ticker.add(&b);
  ticker.add(&a);  // once only
  EXPECT_EQ(ticker.listeners(), 2U);
  runFor(loop, 50);
  // About 50 ticks; a loaded machine may merge some (one read counts several expiries).
  EXPECT_GE(a.ticks, 5);
  EXPECT_EQ(a.ticks, b.ticks);
  ticker.remove(&a);
  ticker.remove(&b);
  const int before = a.ticks + b.ticks;
  runFor(loop, 20);
  EXPECT_EQ(a.ticks + b.ticks, before);  // stopped: no tick after the last listener left
}

TEST(PollTickerTest, AListenerMayRemoveItselfOrAnotherDuringATick) {
  EventLoop loop;
  PollTicker ticker(loop, microseconds{1000});
  Counting first;
  Counting second;
  Counting third;
  first.on_tick = [&] {
    ticker.remove(&first);
    ticker.remove(&second);  // not ticked in this round either
  };
  ticker.add(&first);
  ticker.add(&second);
  ticker.add(&third);
  runFor(loop, 30);
  EXPECT_EQ(first.ticks, 1);
  EXPECT_EQ(second.ticks, 0);
  EXPECT_GE(third.ticks, 2);
  EXPECT_EQ(ticker.listeners(), 1U);
}

}  // namespace
}  // namespace iperf3proxy::ev
