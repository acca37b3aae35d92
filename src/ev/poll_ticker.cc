#include "ev/poll_ticker.h"

#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

namespace iperf3proxy::ev {

PollTicker::PollTicker(EventLoop& loop, std::chrono::microseconds interval) : interval_(interval) {
  if (interval_.count() <= 0) {
    interval_ = std::chrono::microseconds{0};
    return;
  }
  fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd_ == -1) {
    interval_ = std::chrono::microseconds{0};
    return;
  }
  readable_ = std::make_unique<IoEvent>(loop, fd_, IoEvent::Kind::Read, [this] { onReadable(); });
}

PollTicker::~PollTicker() {
  readable_.reset();
  if (fd_ != -1) {
    ::close(fd_);
  }
}

void PollTicker::add(Listener* listener) {
  if (!available() ||
      std::find(listeners_.begin(), listeners_.end(), listener) != listeners_.end()) {
    return;
  }
  listeners_.push_back(listener);
  setRunning(true);
}

void PollTicker::remove(Listener* listener) {
  const auto it = std::find(listeners_.begin(), listeners_.end(), listener);
  if (it == listeners_.end()) {
    return;
  }
  if (in_tick_) {
    *it = nullptr;  // the tick's loop is walking the vector: erased once it is done
  } else {
    listeners_.erase(it);
  }
  if (listeners() == 0) {
    setRunning(false);
  }
}

std::size_t PollTicker::listeners() const {
  return static_cast<std::size_t>(std::count_if(listeners_.begin(), listeners_.end(),
                                                [](Listener* l) { return l != nullptr; }));
}

void PollTicker::setRunning(bool running) {
  if (running == running_) {
    return;
  }
  running_ = running;
  itimerspec spec{};
  if (running) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(interval_).count();
    spec.it_interval.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    spec.it_interval.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    spec.it_value = spec.it_interval;
  }
  // Disarming also clears an expiry not yet read, so a stopped ticker never fires late.
  (void)::timerfd_settime(fd_, 0, &spec, nullptr);
  if (running) {
    readable_->enable();
  } else {
    readable_->disable();
  }
}

void PollTicker::onReadable() {
  // The read is needed: a periodic timerfd is re-armed by reading its expiry count, so an
  // edge-triggered registration without it ticks once and never again (tried).
  std::uint64_t expirations = 0;
  if (::read(fd_, &expirations, sizeof(expirations)) != sizeof(expirations)) {
    return;  // EAGAIN: disarmed after the readiness was reported
  }
  in_tick_ = true;
  // By index: listeners added during the tick are appended and wait for the next one.
  const std::size_t count = listeners_.size();
  for (std::size_t i = 0; i < count; ++i) {
    if (listeners_[i] != nullptr) {
      listeners_[i]->onTick();
    }
  }
  in_tick_ = false;
  std::erase(listeners_, nullptr);
}

}  // namespace iperf3proxy::ev
