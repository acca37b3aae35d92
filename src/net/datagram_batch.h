#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace iperf3proxy::net {

// One datagram somewhere in memory: what the relays move, never split, merged or resized.
struct DatagramView {
  const std::uint8_t* data;
  std::uint32_t size;
};

// What a send did: how many datagrams the kernel took, and why it stopped before the end (0 when
// it did not; EAGAIN when the socket's buffer is full).
struct SendResult {
  std::size_t sent = 0;
  int error = 0;
};

// Enables UDP GRO on a socket (best effort): the kernel may then hand over several datagrams of
// one flow and one size in a single receive, which DatagramBatch splits again.
void enableUdpGro(int fd);

// Sends `datagrams` in order on a connected UDP socket in as few system calls as it can: runs of
// equal-sized datagrams (the last of a run may be shorter) go out as one UDP GSO send each, which
// the kernel (or the NIC) cuts back into exactly those datagrams. `gso` false sends one datagram
// per message. Scratch space is reused from call to call; one sender per loop.
class DatagramSender {
 public:
  // Most datagrams per GSO send (the kernel's UDP_MAX_SEGMENTS is 64 or more), and most bytes:
  // one GSO send is one IP packet of at most 64 KiB before segmentation.
  static constexpr std::size_t kMaxSegments = 64;
  static constexpr std::size_t kMaxGsoBytes = 65000;

  SendResult send(int fd, std::span<const DatagramView> datagrams, bool gso);

 private:
  // One sendmmsg message: a run of datagrams.
  struct Run {
    std::size_t first;
    std::size_t count;
    std::uint16_t segment_size;  // 0: not a GSO send
  };

  std::vector<Run> runs_;
  std::vector<iovec> iovecs_;
  std::vector<mmsghdr> messages_;
  std::vector<std::uint8_t> control_;
};

// A reusable batch of receive buffers for recvmmsg, with GRO: one system call receives many
// datagrams, and a GRO receive of several datagrams is split back into them. One batch serves
// every flow of a loop: a batch is always sent on (or copied aside) before the next receive.
class DatagramBatch {
 public:
  // Large enough for any UDP payload, and for a GRO receive (at most 64 KiB).
  static constexpr std::size_t kMaxDatagram = 65536;

  explicit DatagramBatch(std::size_t capacity = 64);

  // Receives up to capacity messages from a socket; returns how many datagrams they held (0 on
  // EAGAIN), or -1 with errno set on another error. Source addresses are recorded per datagram.
  int receive(int fd);

  // The last receive filled every buffer: the socket may hold more. When it did not, the socket
  // was drained at that moment, and another receive would most likely only return EAGAIN.
  bool filled() const { return messages_received_ == capacity_; }

  // The datagrams of the last receive, in order.
  std::span<const DatagramView> datagrams() const { return datagrams_; }

  std::span<const std::uint8_t> datagram(int index) const;
  const sockaddr_storage& source(int index) const;
  socklen_t sourceLength(int index) const;

  // Sends `count` datagrams of the last receive from `first` on, on a connected socket.
  SendResult send(int fd, int first, int count, bool gso);

  // Sends other datagrams with the batch's scratch space (see DatagramSender).
  SendResult send(int fd, std::span<const DatagramView> datagrams, bool gso) {
    return sender_.send(fd, datagrams, gso);
  }

  static std::uint64_t bytes(std::span<const DatagramView> datagrams);

 private:
  std::size_t capacity_;
  std::size_t messages_received_ = 0;
  // Not value-initialised: only the pages datagrams are written to become resident.
  std::unique_ptr<std::uint8_t[]> storage_;
  std::vector<iovec> iovecs_;
  std::vector<sockaddr_storage> sources_;
  std::vector<mmsghdr> messages_;
  std::vector<std::uint8_t> control_;
  std::vector<DatagramView> datagrams_;
  std::vector<std::uint32_t> message_of_;  // per datagram: the message it came in
  DatagramSender sender_;
};

}  // namespace iperf3proxy::net
