#include "ev/io_event.h"

#include <utility>

namespace iperf3proxy::ev {

IoEvent::IoEvent(EventLoop& loop, int fd, Kind kind, std::function<void()> callback)
    : callback_(std::move(callback)),
      event_(event_new(loop.base(),
                       fd,
                       static_cast<short>((kind == Kind::Read ? EV_READ : EV_WRITE) | EV_PERSIST),
                       &IoEvent::trampoline,
                       this)) {}

void IoEvent::enable() {
  if (!enabled_) {
    event_add(event_.get(), nullptr);
    enabled_ = true;
  }
}

void IoEvent::disable() {
  if (enabled_) {
    event_del(event_.get());
    enabled_ = false;
  }
}

void IoEvent::trampoline(evutil_socket_t, short, void* arg) noexcept {
  static_cast<IoEvent*>(arg)->callback_();
}

Timer::Timer(EventLoop& loop, std::function<void()> callback)
    : callback_(std::move(callback)), event_(evtimer_new(loop.base(), &Timer::trampoline, this)) {}

void Timer::armMs(long milliseconds) {
  timeval tv{};
  tv.tv_sec = milliseconds / 1000;
  tv.tv_usec = (milliseconds % 1000) * 1000;
  evtimer_add(event_.get(), &tv);
}

void Timer::disarm() {
  evtimer_del(event_.get());
}

bool Timer::armed() const {
  return evtimer_pending(event_.get(), nullptr) != 0;
}

void Timer::trampoline(evutil_socket_t, short, void* arg) noexcept {
  static_cast<Timer*>(arg)->callback_();
}

}  // namespace iperf3proxy::ev
