#pragma once

#include <chrono>
#include <deque>
#include <unordered_set>
#include <utility>

#include "proto/cookie.h"

namespace iperf3proxy::proxy {

// The cookies of tests that ended a short while ago. A data connection that arrives after its
// test ended must not start a new test (it would reach the backend as a control connection), so
// the front refuses connections with these cookies. Bounded in time and in number.
class RecentCookies {
 public:
  using Clock = std::chrono::steady_clock;

  RecentCookies(Clock::duration keep_for, std::size_t capacity)
      : keep_for_(keep_for), capacity_(capacity) {}

  void add(const proto::Cookie& cookie, Clock::time_point now) {
    expire(now);
    if (set_.insert(cookie).second) {
      order_.emplace_back(now, cookie);
    }
    while (order_.size() > capacity_) {
      set_.erase(order_.front().second);
      order_.pop_front();
    }
  }

  bool contains(const proto::Cookie& cookie, Clock::time_point now) {
    expire(now);
    return set_.contains(cookie);
  }

  std::size_t size() const { return set_.size(); }

 private:
  void expire(Clock::time_point now) {
    while (!order_.empty() && now - order_.front().first > keep_for_) {
      set_.erase(order_.front().second);
      order_.pop_front();
    }
  }

  Clock::duration keep_for_;
  std::size_t capacity_;
  std::deque<std::pair<Clock::time_point, proto::Cookie>> order_;
  std::unordered_set<proto::Cookie, proto::CookieHash> set_;
};

}  // namespace iperf3proxy::proxy
