#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

#include "ev/event_loop.h"
#include "ev/io_event.h"

namespace iperf3proxy::ev {

// A steady tick for sources that are cheaper to poll than to be woken by: one timerfd per loop,
// counting only while something listens. A busy UDP flow wakes its loop once per few datagrams
// when it is read on readiness (tens of thousands of wake-ups a second at 1 Gbit/s); read on a
// tick, every busy flow of the loop is served by one wake-up per interval, the way a NIC
// coalesces its interrupts. The price is latency: up to one interval per datagram.
//
// libevent's own timers have millisecond resolution (epoll_wait's timeout), too coarse for this;
// a timerfd has the kernel's.
class PollTicker {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    virtual void onTick() = 0;
  };

  // `interval` zero (or a kernel without timerfd): the ticker is off and available() is false.
  PollTicker(EventLoop& loop, std::chrono::microseconds interval);
  ~PollTicker();
  PollTicker(const PollTicker&) = delete;
  PollTicker& operator=(const PollTicker&) = delete;

  bool available() const { return fd_ != -1; }

  std::chrono::microseconds interval() const { return interval_; }

  // Listeners are called once per tick until removed. Either may be called from onTick().
  void add(Listener* listener);
  void remove(Listener* listener);

  std::size_t listeners() const;

 private:
  void onReadable();
  void setRunning(bool running);

  std::chrono::microseconds interval_;
  int fd_ = -1;
  bool running_ = false;
  bool in_tick_ = false;
  std::vector<Listener*> listeners_;  // null: removed during a tick, erased after it
  std::unique_ptr<IoEvent> readable_;
};

}  // namespace iperf3proxy::ev
