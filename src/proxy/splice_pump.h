#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "ev/io_event.h"
#include "net/unique_fd.h"
#include "proxy/pipe_pool.h"
#include "proxy/settings.h"

namespace iperf3proxy::proxy {

// Moves bytes both ways between two connected sockets with splice(2) through a pipe per
// direction, so payload never enters user space.
//
// Contract: the pump *borrows* both socket fds (the owner keeps them open for the pump's whole
// life and closes them after), owns its pipes (taken from a PipePool and given back empty) and
// events, counts bytes per direction, passes a half-close through per direction (EOF on one side
// becomes shutdown(SHUT_WR) on the other once the pipe is flushed: iperf3 3.21+ waits for that
// EOF), and reports exactly one completion.
//
// An error on one side (a reset, a write that fails) ends the direction toward that side at once,
// but the direction away from it first delivers what it still holds, read before the error, to
// the other side if that side is open: a direct connection delivers the bytes that arrived before
// a reset too. The completion (the first error) follows that, or kFlushAfterErrorMs at the latest.
class SplicePump {
 public:
  enum class Outcome { Closed, Error };

  struct Completion {
    Outcome outcome;
    int error;      // errno for Outcome::Error
    bool at_first;  // the error happened on the first fd's side
  };

  using DoneCallback = std::function<void(const Completion&)>;

  // Pipe capacity when no pool is given (component tests).
  static constexpr int kDefaultPipeSize = 262144;
  // After an error on one side, how long the other direction may take to deliver what it holds.
  static constexpr long kFlushAfterErrorMs = fixed::kFlushAfterErrorMs;

  // `pipes`: where the pipes come from and go back to; null: pipes of kDefaultPipeSize of its own.
  SplicePump(ev::EventLoop& loop,
             int first_fd,
             int second_fd,
             DoneCallback done,
             std::shared_ptr<PipePool> pipes = nullptr);
  ~SplicePump();
  SplicePump(const SplicePump&) = delete;
  SplicePump& operator=(const SplicePump&) = delete;

  // Takes the pipes and starts moving. Returns false (errno set) if pipes cannot be had.
  bool start();

  // Moves everything the first peer has sent so far into the second peer's TCP and calls `done`
  // once the second peer has acknowledged it all and the first has been quiet for a moment (or
  // the direction ended). Used at TEST_END: the proxy forwards the client's TEST_END only after
  // the test data sent before it has reached the server, as on a direct path, so that iperf3's
  // sender and receiver counts agree.
  // A pump drains at most once: later calls are ignored (their `done` is never called), so
  // nothing the peers do can restart the drain or push its end back.
  void drainFirstToSecond(std::function<void()> done);

  // Ends a drain in progress without calling its `done` (the owner gave up waiting): its
  // per-tick work stops at once.
  void stopDrain();

  bool draining() const { return drain_tick_ != nullptr && drain_tick_->armed(); }

  // Stops all I/O at once, with no completion: the owner is closing the test, and nothing must
  // move or be counted after that.
  void stop();

  std::uint64_t bytesFirstToSecond() const { return forward_.bytes; }

  std::uint64_t bytesSecondToFirst() const { return backward_.bytes; }

 private:
  struct Direction {
    int from = -1;
    int to = -1;
    net::UniqueFd pipe_read;
    net::UniqueFd pipe_write;
    std::size_t in_pipe = 0;
    std::uint64_t bytes = 0;
    bool eof = false;
    bool read_failed = false;  // `from` reported an error once
    bool done = false;
    bool from_is_first = true;
    std::unique_ptr<ev::IoEvent> readable;  // `from` has data
    std::unique_ptr<ev::IoEvent> writable;  // `to` has room
  };

  void pump(Direction& d);
  void finishDirection(Direction& d);
  void fail(Direction& d, int error, bool at_from);
  void complete(const Completion& completion);
  void releasePipes();
  void onDrainTick();
  void finishDrain();

  ev::EventLoop& loop_;
  DoneCallback done_;
  std::shared_ptr<PipePool> pipes_;
  bool completed_ = false;
  // The first error, once one side failed: reported when the other direction has delivered.
  std::optional<Completion> failure_;
  std::unique_ptr<ev::Timer> flush_deadline_;
  Direction forward_;   // first -> second
  Direction backward_;  // second -> first
  std::function<void()> drained_;
  bool drain_started_ = false;
  std::chrono::steady_clock::time_point quiet_since_;
  std::optional<std::uint32_t> last_peer_window_;
  std::unique_ptr<ev::Timer> drain_tick_;
};

}  // namespace iperf3proxy::proxy
