#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/datagram_batch.h"
#include "proxy/udp_flow.h"

namespace iperf3proxy::proxy {

// The UDP streams of one test: one UdpFlow per client source address and port, in the order
// the client set them up (which is the order the server accepts them in: setup is lock-step,
// docs/PROTOCOL.md §4.3, §7.5).
class UdpStreams {
 public:
  UdpStreams(ev::EventLoop& loop,
             LoopDatagramIo io,  // its batch outlives this object
             net::Address backend,
             int expected_flows);
  UdpStreams(const UdpStreams&) = delete;
  UdpStreams& operator=(const UdpStreams&) = delete;

  // Opens the flow `first_datagram` begins and forwards that datagram. Returns the new flow, or
  // null with `error` set.
  const UdpFlow* open(const net::Address& proxy_local,
                      const net::Address& source,
                      std::span<const std::uint8_t> first_datagram,
                      std::string* error);

  // A datagram for an open flow that reached the shared listener; false if no flow has `source`.
  bool route(const net::Address& source, std::span<const std::uint8_t> datagram);

  bool complete() const { return static_cast<int>(flows_.size()) >= expected_; }

  int count() const { return static_cast<int>(flows_.size()); }

  int expected() const { return expected_; }

  // No more I/O (the test is closing).
  void stop();

  std::uint64_t bytesUp() const;
  std::uint64_t bytesDown() const;
  std::uint64_t dropped() const;

 private:
  ev::EventLoop& loop_;
  LoopDatagramIo io_;
  net::Address backend_;
  int expected_;
  std::vector<std::unique_ptr<UdpFlow>> flows_;
};

}  // namespace iperf3proxy::proxy
