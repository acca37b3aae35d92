#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "ev/io_event.h"

namespace iperf3proxy::proxy {

// The log of one kind of event that can come in floods (refused connections, "busy" answers,
// stray datagrams): an open port attracts scanners, and a warning per event would let any of
// them fill the log and slow the loop that writes it. The first event in each interval is a
// warning; the others are debug lines; at the end of an interval that had more, one warning
// counts them. So every event has exactly one line at debug level, and a warning level log gets
// at most two lines per interval.
class ThrottledLog {
 public:
  ThrottledLog(ev::EventLoop& loop,
               std::string what,  // the events, plural, e.g. "refused connections"
               std::chrono::milliseconds interval = std::chrono::seconds(1));
  ThrottledLog(const ThrottledLog&) = delete;
  ThrottledLog& operator=(const ThrottledLog&) = delete;

  void log(const std::string& line);

 private:
  void flush();

  std::string what_;
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point last_warning_{};
  bool warned_once_ = false;
  std::uint64_t unwarned_ = 0;
  ev::Timer flush_;
};

}  // namespace iperf3proxy::proxy
