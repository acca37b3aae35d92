#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "ev/ev_ptr.h"

namespace iperf3proxy::ev {

// A move-only callable: work handed to a loop by post(). Unlike std::function it can own what it
// carries (a socket, a buffer), which then closes with it if the task is dropped unrun.
class Task {
 public:
  template <typename F>
  Task(F function)  // NOLINT(google-explicit-constructor): a Task is any callable
      : impl_(std::make_unique<Impl<F>>(std::move(function))) {}

  void operator()() { impl_->run(); }

 private:
  struct Base {
    virtual ~Base() = default;
    virtual void run() = 0;
  };

  template <typename F>
  struct Impl : Base {
    explicit Impl(F f) : function(std::move(f)) {}

    void run() override { function(); }

    F function;
  };

  std::unique_ptr<Base> impl_;
};

// Anything the loop may destroy later, once the current callback stack has unwound.
class DeferredDeletable {
 public:
  virtual ~DeferredDeletable() = default;
};

// Owns one event_base. Every object that registers events with a loop is used on that loop's
// thread only; the one exception is post(), which any thread may call to hand work to the loop
// (that is how the front loop and the worker loops talk, see proxy/worker.h).
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

  // Runs `task` on this loop's thread, soon, in the order posted. Thread-safe; called from the
  // loop's own thread it still runs later (never inside the caller), so a caller never sees its
  // own callee re-entered. Tasks still queued when the loop is destroyed are dropped unrun.
  void post(Task task);

 private:
  static void onDeferredDelete(evutil_socket_t, short, void* arg) noexcept;
  void deleteDeferred();
  static void onSignalEvent(evutil_socket_t, short, void* arg) noexcept;
  static void onPosted(evutil_socket_t, short, void* arg) noexcept;

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

  // post(): an eventfd wakes the loop; the queue is the only state shared between threads.
  int wake_fd_ = -1;
  EventPtr wake_event_;
  std::mutex posted_mutex_;
  std::vector<Task> posted_;
};

}  // namespace iperf3proxy::ev
