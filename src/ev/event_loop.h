#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "ev/ev_ptr.h"

namespace iperf3proxy::ev {

// Anything the loop may destroy later, once the current callback stack has unwound.
class DeferredDeletable {
 public:
  virtual ~DeferredDeletable() = default;
};

// Owns the one event_base of the process (single-threaded by design: every connection of a test
// is routed by cookie and must live on the same loop).
class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  event_base* base() const { return base_.get(); }

  // Runs until stop() or until nothing is left to wait for.
  void run();
  void stop();

  // Destroys `object` after the current callback returns. Objects never delete themselves or
  // erase themselves from their owner's container inside their own callbacks; they hand
  // themselves here instead.
  void deferredDelete(std::unique_ptr<DeferredDeletable> object);

  // Same for any object: used for event wrappers that must not die inside their own callback.
  template <typename T>
  void deferredDestroy(std::unique_ptr<T> object) {
    if (object) {
      deferredDelete(std::make_unique<Holder<T>>(std::move(object)));
    }
  }

  // Calls `handler` on the loop whenever `signal_number` arrives (until the loop is destroyed).
  void onSignal(int signal_number, std::function<void()> handler);

 private:
  static void onDeferredDelete(evutil_socket_t, short, void* arg) noexcept;
  static void onSignalEvent(evutil_socket_t, short, void* arg) noexcept;

  template <typename T>
  struct Holder : DeferredDeletable {
    explicit Holder(std::unique_ptr<T> held) : object(std::move(held)) {}

    std::unique_ptr<T> object;
  };

  struct SignalHandler {
    std::function<void()> handler;
    EventPtr event;
  };

  EventBasePtr base_;  // first member: destroyed last
  EventPtr deferred_delete_event_;
  std::vector<std::unique_ptr<DeferredDeletable>> to_delete_;
  std::vector<std::unique_ptr<SignalHandler>> signals_;
};

}  // namespace iperf3proxy::ev
