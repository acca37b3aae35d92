#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace iperf3proxy::net {

// A reusable batch of datagram buffers for recvmmsg/sendmmsg: one system call moves many
// datagrams, each kept whole (never coalesced or split). One batch serves every flow, because
// the loop is single-threaded and a batch is always sent on before the next is received.
class DatagramBatch {
 public:
  // Large enough for any UDP payload (65535 - 8 - 20 bytes for IPv4; IPv6 jumbograms aside).
  static constexpr std::size_t kMaxDatagram = 65536;

  explicit DatagramBatch(std::size_t capacity = 32);

  // Receives up to capacity datagrams from a socket; returns how many (0 on EAGAIN), or -1 with
  // errno set on another error. Source addresses are recorded.
  int receive(int fd);

  // Sends the first `count` received datagrams on a connected socket. Returns how many went out;
  // the rest are dropped, as a full socket buffer drops UDP anyway.
  int sendConnected(int fd, int count);

  std::span<const std::uint8_t> datagram(int index) const;
  const sockaddr_storage& source(int index) const;
  socklen_t sourceLength(int index) const;
  std::uint64_t bytes(int count) const;

 private:
  std::size_t capacity_;
  std::vector<std::uint8_t> storage_;
  std::vector<iovec> iovecs_;
  std::vector<sockaddr_storage> sources_;
  std::vector<mmsghdr> messages_;
};

}  // namespace iperf3proxy::net
