#include "ev/event_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <utility>

namespace iperf3proxy::ev {

EventLoop::EventLoop() : base_(event_base_new()) {
  if (!base_) {
    throw std::runtime_error("event_base_new failed");
  }
  deferred_delete_event_.reset(event_new(base_.get(), -1, 0, &EventLoop::onDeferredDelete, this));
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ == -1) {
    throw std::runtime_error("eventfd failed");
  }
  wake_event_.reset(
      event_new(base_.get(), wake_fd_, EV_READ | EV_PERSIST, &EventLoop::onPosted, this));
  event_add(wake_event_.get(), nullptr);
}

EventLoop::~EventLoop() {
  deleteDeferred();
  signals_.clear();
  deferred_delete_event_.reset();
  wake_event_.reset();
  {
    std::lock_guard lock(posted_mutex_);
    posted_.clear();
  }
  ::close(wake_fd_);
}

void EventLoop::post(Task task) {
  bool first = false;
  {
    std::lock_guard lock(posted_mutex_);
    first = posted_.empty();
    posted_.push_back(std::move(task));
  }
  if (first) {
    const std::uint64_t one = 1;
    // EAGAIN only if the counter is near 2^64: the loop is awake anyway.
    (void)::write(wake_fd_, &one, sizeof(one));
  }
}

void EventLoop::onPosted(evutil_socket_t fd, short, void* arg) noexcept {
  auto* self = static_cast<EventLoop*>(arg);
  std::uint64_t count = 0;
  (void)::read(fd, &count, sizeof(count));
  std::vector<Task> tasks;
  {
    std::lock_guard lock(self->posted_mutex_);
    tasks.swap(self->posted_);
  }
  // Tasks posted while these run wake the loop again and run on its next turn.
  for (auto& task : tasks) {
    task();
  }
}

void EventLoop::run() {
  event_base_dispatch(base_.get());
}

void EventLoop::stop() {
  event_base_loopbreak(base_.get());
}

void EventLoop::deferredDelete(std::unique_ptr<DeferredDeletable> object) {
  to_delete_.push_back(std::move(object));
  if (to_delete_.size() == 1) {
    event_active(deferred_delete_event_.get(), 0, 0);
  }
}

void EventLoop::onDeferredDelete(evutil_socket_t, short, void* arg) noexcept {
  static_cast<EventLoop*>(arg)->deleteDeferred();
}

void EventLoop::deleteDeferred() {
  // Destructors may defer further deletions (into a fresh queue, never into the one being
  // cleared); keep going until the queue is empty.
  while (!to_delete_.empty()) {
    auto batch = std::move(to_delete_);
    to_delete_.clear();
    batch.clear();
  }
}

void EventLoop::onSignal(int signal_number, std::function<void()> handler) {
  auto entry = std::make_unique<SignalHandler>();
  entry->handler = std::move(handler);
  entry->event.reset(
      evsignal_new(base_.get(), signal_number, &EventLoop::onSignalEvent, entry.get()));
  event_add(entry->event.get(), nullptr);
  signals_.push_back(std::move(entry));
}

void EventLoop::onSignalEvent(evutil_socket_t, short, void* arg) noexcept {
  static_cast<SignalHandler*>(arg)->handler();
}

}  // namespace iperf3proxy::ev
