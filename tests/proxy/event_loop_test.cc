// Component test: EventLoop's deferred deletion.

#include "ev/event_loop.h"

#include <memory>

#include <gtest/gtest.h>

#include "ev/io_event.h"

namespace iperf3proxy::ev {
namespace {

struct Flagged : DeferredDeletable {
  explicit Flagged(bool& destroyed) : destroyed_(destroyed) {}

  ~Flagged() override { destroyed_ = true; }

  bool& destroyed_;
};

// Hands another object to the loop from its destructor, as an owner that retires its parts
// might.
struct Handing : DeferredDeletable {
  Handing(EventLoop& loop, bool& destroyed) : loop_(loop), destroyed_(destroyed) {}

  ~Handing() override { loop_.deferredDelete(std::make_unique<Flagged>(destroyed_)); }

  EventLoop& loop_;
  bool& destroyed_;
};

TEST(EventLoopTest, DeferredDeletionsHandedOnByDestructorsAllHappen) {
  bool destroyed = false;
  EventLoop loop;
  loop.deferredDelete(std::make_unique<Handing>(loop, destroyed));
  Timer stop(loop, [&] { loop.stop(); });
  stop.armMs(20);
  loop.run();
  EXPECT_TRUE(destroyed);
}

TEST(EventLoopTest, ALoopDestroyedWithDeletionsQueuedStillRunsTheHandedOnOnes) {
  bool destroyed = false;
  {
    auto loop = std::make_unique<EventLoop>();
    loop->deferredDelete(std::make_unique<Handing>(*loop, destroyed));
  }  // never run: the loop's destructor empties the queue, including what it hands on
  EXPECT_TRUE(destroyed);
}

}  // namespace
}  // namespace iperf3proxy::ev
