#pragma once

#include <atomic>
#include <cstdint>

#include "proto/test_params.h"

namespace iperf3proxy::proxy {

// Test data relayed so far, by direction and protocol, over every test the proxy has run or
// runs now. The workers add to it while their tests run (each session once a second, and its
// remainder when it ends), and the front reads it whenever it likes (a metrics scrape): the one
// piece of state both sides touch, hence atomics. Relaxed order: each number only grows, and no
// other data is published through it.
class TrafficCounters {
 public:
  struct Snapshot {
    std::uint64_t tcp_up = 0;
    std::uint64_t tcp_down = 0;
    std::uint64_t udp_up = 0;
    std::uint64_t udp_down = 0;
  };

  void add(proto::Transport transport, std::uint64_t up, std::uint64_t down) {
    auto& pair = transport == proto::Transport::Udp ? udp_ : tcp_;
    pair.up.fetch_add(up, std::memory_order_relaxed);
    pair.down.fetch_add(down, std::memory_order_relaxed);
  }

  Snapshot snapshot() const {
    return Snapshot{
        tcp_.up.load(std::memory_order_relaxed), tcp_.down.load(std::memory_order_relaxed),
        udp_.up.load(std::memory_order_relaxed), udp_.down.load(std::memory_order_relaxed)};
  }

 private:
  struct Directions {
    std::atomic<std::uint64_t> up{0};    // client -> server
    std::atomic<std::uint64_t> down{0};  // server -> client
  };

  Directions tcp_;
  Directions udp_;
};

}  // namespace iperf3proxy::proxy
