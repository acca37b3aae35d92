#include "proxy/throttled_log.h"

#include <spdlog/spdlog.h>

namespace iperf3proxy::proxy {

ThrottledLog::ThrottledLog(ev::EventLoop& loop,
                           std::string what,
                           std::chrono::milliseconds interval)
    : what_(std::move(what)), interval_(interval), flush_(loop, [this] { flush(); }) {}

void ThrottledLog::log(const std::string& line) {
  const auto now = std::chrono::steady_clock::now();
  if (!warned_once_ || now - last_warning_ >= interval_) {
    warned_once_ = true;
    last_warning_ = now;
    spdlog::warn("{}", line);
    return;
  }
  spdlog::debug("{}", line);
  if (unwarned_++ == 0) {
    flush_.armMs(static_cast<long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(last_warning_ + interval_ - now)
            .count()));
  }
}

void ThrottledLog::flush() {
  if (unwarned_ > 0) {
    spdlog::warn("... and {} more {} within {} ms (each one is in the debug log)", unwarned_, what_,
                 interval_.count());
    unwarned_ = 0;
    last_warning_ = std::chrono::steady_clock::now();
  }
}

}  // namespace iperf3proxy::proxy
