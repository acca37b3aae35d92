#pragma once

#include <functional>

#include "ev/event_loop.h"

namespace iperf3proxy::ev {

// Readiness of one fd in one direction (read or write), level-triggered and persistent while
// enabled. Registers `this` with libevent, so it is neither copyable nor movable; the owner of an
// IoEvent also owns everything its callback touches and declares it after that state.
class IoEvent {
 public:
  enum class Kind { Read, Write };

  IoEvent(EventLoop& loop, int fd, Kind kind, std::function<void()> callback);
  IoEvent(const IoEvent&) = delete;
  IoEvent& operator=(const IoEvent&) = delete;

  void enable();
  void disable();

  bool enabled() const { return enabled_; }

 private:
  static void trampoline(evutil_socket_t, short, void* arg) noexcept;

  std::function<void()> callback_;
  EventPtr event_;
  bool enabled_ = false;
};

// A one-shot timer. Re-arming replaces the previous deadline.
class Timer {
 public:
  Timer(EventLoop& loop, std::function<void()> callback);
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void armMs(long milliseconds);
  void disarm();
  bool armed() const;

 private:
  static void trampoline(evutil_socket_t, short, void* arg) noexcept;

  std::function<void()> callback_;
  EventPtr event_;
};

}  // namespace iperf3proxy::ev
