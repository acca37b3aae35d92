#include "ev/event_loop.h"

#include <stdexcept>
#include <utility>

namespace iperf3proxy::ev {

EventLoop::EventLoop() : base_(event_base_new()) {
  if (!base_) {
    throw std::runtime_error("event_base_new failed");
  }
  deferred_delete_event_.reset(event_new(base_.get(), -1, 0, &EventLoop::onDeferredDelete, this));
}

EventLoop::~EventLoop() {
  to_delete_.clear();
  signals_.clear();
  deferred_delete_event_.reset();
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
  auto* self = static_cast<EventLoop*>(arg);
  // Destructors may defer further deletions; keep going until the queue is empty.
  while (!self->to_delete_.empty()) {
    auto batch = std::move(self->to_delete_);
    self->to_delete_.clear();
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
