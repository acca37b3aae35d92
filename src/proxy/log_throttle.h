#pragma once

#include <chrono>
#include <cstdint>

namespace iperf3proxy::proxy {

// At most one log line per interval for one kind of event, with a count of the ones not logged:
// an open port attracts scanners, and one line per refused connection would let any of them fill
// the log (and slow the loop that writes it).
class LogThrottle {
 public:
  using Clock = std::chrono::steady_clock;

  explicit LogThrottle(Clock::duration interval = std::chrono::seconds(1)) : interval_(interval) {}

  // True if this event gets a line; `suppressed()` then tells how many did not since the last.
  bool admit(Clock::time_point now) {
    if (logged_once_ && now - last_ < interval_) {
      ++pending_;
      return false;
    }
    logged_once_ = true;
    last_ = now;
    suppressed_ = pending_;
    pending_ = 0;
    return true;
  }

  std::uint64_t suppressed() const { return suppressed_; }

 private:
  Clock::duration interval_;
  Clock::time_point last_{};
  bool logged_once_ = false;
  std::uint64_t pending_ = 0;
  std::uint64_t suppressed_ = 0;
};

}  // namespace iperf3proxy::proxy
