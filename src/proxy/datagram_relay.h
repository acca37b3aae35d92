#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <span>
#include <vector>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/datagram_batch.h"
#include "proxy/settings.h"

namespace iperf3proxy::proxy {

// One direction of a UDP flow: datagrams from one connected socket to another, each kept whole,
// many per system call (recvmmsg with GRO in, sendmmsg with GSO out).
//
// When the destination's send buffer is full, the relay does not drop: it keeps what it could not
// send, stops reading the source and waits for room (at most kPauseMs), so the source's own
// receive buffer absorbs the burst, as the receiver's buffer would on a direct path.
class DatagramRelay {
 public:
  // Longest pause for a full destination before what is held is dropped.
  static constexpr long kPauseMs = fixed::kUdpFullPauseMs;

  // `only_from`: if given, datagrams from any other source are dropped (a socket bound before it
  // was connected may hold a stray one). `pause_ms`: the longest pause (tests change it).
  DatagramRelay(ev::EventLoop& loop,
                net::DatagramBatch& batch,  // the loop's, shared by every relay; outlives this
                int from,
                int to,
                const net::Address* only_from,
                long pause_ms = kPauseMs);
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

 private:
  void onReadable();
  void onWritable();
  void onPauseOver();
  // Sends and counts what went out; falls back from GSO for good where the path refuses it.
  net::SendResult send(std::span<const net::DatagramView> datagrams);
  // Sends, and holds what meets a full buffer. Returns false when the relay paused.
  bool deliver(std::span<const net::DatagramView> datagrams);
  void hold(std::span<const net::DatagramView> datagrams);
  void resume();

  net::DatagramBatch& batch_;
  int from_;
  int to_;
  bool check_source_;
  sockaddr_storage expected_{};
  long pause_ms_;
  bool gso_ = true;
  std::uint64_t bytes_ = 0;
  std::uint64_t datagrams_ = 0;
  std::uint64_t dropped_ = 0;
  std::vector<net::DatagramView> scratch_;  // datagrams that passed the source check
  std::vector<std::uint8_t> held_bytes_;    // what a full destination did not take yet
  std::vector<net::DatagramView> held_;     // (views into held_bytes_)
  ev::IoEvent readable_;
  ev::IoEvent writable_;
  ev::Timer pause_over_;
};

}  // namespace iperf3proxy::proxy
