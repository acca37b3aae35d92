#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "ev/io_event.h"
#include "ev/poll_ticker.h"
#include "net/address.h"
#include "net/datagram_batch.h"
#include "proxy/settings.h"

namespace iperf3proxy::proxy {

// A datagram that reached a flow's socket bound to the proxy's UDP port `local` but came from
// another source than the flow's client: it was meant for the shared listener.
using StrayDatagramHandler = std::function<void(
    const net::Address& local, const net::Address& source, std::span<const std::uint8_t>)>;

// What the UDP relays of one loop share.
struct LoopDatagramIo {
  net::DatagramBatch& batch;  // receive buffers: a batch is sent on before the next receive
  std::shared_ptr<ev::PollTicker> ticker;  // null: every relay reads on readiness
  StrayDatagramHandler stray;              // null: strays are dropped
};

// One direction of a UDP flow: datagrams from one connected socket to another, each kept whole,
// many per system call (recvmmsg with GRO in, sendmmsg with GSO out).
//
// When the destination's send buffer is full, the relay does not drop: it keeps what it could not
// send, stops reading the source and waits for room (at most kPauseMs), so the source's own
// receive buffer absorbs the burst, as the receiver's buffer would on a direct path.
//
// A busy direction is read on the loop's poll tick instead of on readiness (receive coalescing,
// see ev::PollTicker): once its rate gives a tick at least kPollFromPerTick datagrams on average,
// it leaves readiness for the tick, and it goes back when a tick brings fewer than
// kEventsBelowPerTick. A slow flow, such as iperf3's default 1 Mbit/s, never waits for a tick.
// Nor does one so fast that a tick would bring more than about one GSO send (kMaxTickBytes or
// kMaxTickDatagrams): what a tick reads goes out at once, and a larger burst could overflow the
// destination's receive buffer (Linux's default, 208 KiB of kernel memory, holds about 90
// datagrams of 1400 bytes) where arrivals spread over the interval would not; at such rates each
// wake-up finds many datagrams anyway.
class DatagramRelay : private ev::PollTicker::Listener {
 public:
  // The rate is judged over windows of this length.
  static constexpr std::chrono::milliseconds kRateWindow{10};
  // Datagrams per tick (on average over a window) at which polling starts, and below which it
  // stops: apart, so that a rate near the line does not flap between the two.
  static constexpr double kPollFromPerTick = 4.0;
  static constexpr double kEventsBelowPerTick = 1.0;
  // About one GSO send (net::DatagramSender::kMaxGsoBytes, kMaxSegments).
  static constexpr double kMaxTickBytes = 64 * 1024;
  static constexpr double kMaxTickDatagrams = 64;

  // Longest pause for a full destination before what is held is dropped.
  static constexpr long kPauseMs = fixed::kUdpFullPauseMs;

  // `only_from`: if given, datagrams from any other source are not relayed (a socket bound before
  // it was connected may hold a stray one): they go to `on_stray`, or are dropped without it.
  // `io.ticker`: the loop's; null or unavailable: the relay always reads on readiness.
  // `pause_ms`: the longest pause (tests change it).
  using StrayCallback =
      std::function<void(const net::Address& source, std::span<const std::uint8_t> datagram)>;
  DatagramRelay(ev::EventLoop& loop,
                const LoopDatagramIo& io,  // the batch outlives this relay
                int from,
                int to,
                const net::Address* only_from,
                long pause_ms = kPauseMs,
                StrayCallback on_stray = nullptr);
  ~DatagramRelay();
  DatagramRelay(const DatagramRelay&) = delete;
  DatagramRelay& operator=(const DatagramRelay&) = delete;

  void start() { readable_.enable(); }

  // No more I/O (the test is closing).
  void stop();

  // A datagram of this direction that reached the proxy elsewhere (the shared listener).
  void forward(std::span<const std::uint8_t> datagram);

  std::uint64_t bytes() const { return bytes_; }

  std::uint64_t datagrams() const { return datagrams_; }

  std::uint64_t dropped() const { return dropped_; }

  // The relay is waiting for room at the destination.
  bool paused() const { return !held_.empty(); }

  // The relay reads its source on the loop's tick, not on readiness.
  bool polling() const { return polling_; }

  // The rule above: whether a relay (now `polling` or not) whose last window averaged these
  // figures per tick reads on the tick next.
  static bool shouldPoll(bool polling, double datagrams_per_tick, double bytes_per_tick);

 private:
  void onReadable();
  void onTick() override;

  // Reads and relays what the source holds, a bounded number of batches: how many datagrams
  // were read, and whether the last batch came full (the source may hold more).
  struct Drained {
    std::uint64_t datagrams;
    bool more_waiting;
  };

  Drained drain();
  // Counts `datagrams` toward the rate and, at the end of a window, moves between readiness and
  // the tick.
  void judgeRate(std::uint64_t datagrams);
  void setPolling(bool polling);
  void onWritable();
  void onPauseOver();
  // Sends and counts what went out; falls back from GSO for good where the path refuses it.
  net::SendResult send(std::span<const net::DatagramView> datagrams);
  // Sends, and holds what meets a full buffer. Returns false when the relay paused.
  bool deliver(std::span<const net::DatagramView> datagrams);
  void hold(std::span<const net::DatagramView> datagrams);
  void resume();

  net::DatagramBatch& batch_;
  std::shared_ptr<ev::PollTicker> ticker_;
  int from_;
  int to_;
  bool check_source_;
  sockaddr_storage expected_{};
  StrayCallback on_stray_;
  long pause_ms_;
  bool gso_ = true;
  std::uint64_t bytes_ = 0;
  std::uint64_t datagrams_ = 0;
  std::uint64_t dropped_ = 0;
  std::vector<net::DatagramView> scratch_;  // datagrams that passed the source check
  std::vector<std::uint8_t> held_bytes_;    // what a full destination did not take yet
  std::vector<net::DatagramView> held_;     // (views into held_bytes_)
  bool polling_ = false;
  std::chrono::steady_clock::time_point window_start_;
  std::uint64_t window_datagrams_ = 0;
  std::uint64_t window_bytes_base_ = 0;  // bytes_ when the window began
  ev::IoEvent readable_;
  ev::IoEvent writable_;
  ev::Timer pause_over_;
};

}  // namespace iperf3proxy::proxy
