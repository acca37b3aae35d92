#include "net/datagram_batch.h"

#include <cerrno>

namespace iperf3proxy::net {

DatagramBatch::DatagramBatch(std::size_t capacity)
    : capacity_(capacity),
      storage_(capacity * kMaxDatagram),
      iovecs_(capacity),
      sources_(capacity),
      messages_(capacity) {}

int DatagramBatch::receive(int fd) {
  for (std::size_t i = 0; i < capacity_; ++i) {
    iovecs_[i] = iovec{storage_.data() + i * kMaxDatagram, kMaxDatagram};
    messages_[i] = mmsghdr{};
    messages_[i].msg_hdr.msg_iov = &iovecs_[i];
    messages_[i].msg_hdr.msg_iovlen = 1;
    messages_[i].msg_hdr.msg_name = &sources_[i];
    messages_[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
  }
  const int n =
      ::recvmmsg(fd, messages_.data(), static_cast<unsigned>(capacity_), MSG_DONTWAIT, nullptr);
  if (n == -1) {
    return errno == EAGAIN || errno == EINTR ? 0 : -1;
  }
  return n;
}

int DatagramBatch::sendConnected(int fd, int count) {
  int sent = 0;
  while (sent < count) {
    for (int i = sent; i < count; ++i) {
      const auto index = static_cast<std::size_t>(i);
      iovecs_[index].iov_len = messages_[index].msg_len;
      messages_[index].msg_hdr.msg_name = nullptr;
      messages_[index].msg_hdr.msg_namelen = 0;
    }
    const int n = ::sendmmsg(fd, messages_.data() + sent, static_cast<unsigned>(count - sent),
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == -1) {
      if (errno == EINTR) {
        continue;
      }
      // EAGAIN (buffer full), ECONNREFUSED (the peer's port closed: ICMP), and the rest: drop.
      break;
    }
    sent += n;
  }
  return sent;
}

std::span<const std::uint8_t> DatagramBatch::datagram(int index) const {
  const auto i = static_cast<std::size_t>(index);
  return {storage_.data() + i * kMaxDatagram, messages_[i].msg_len};
}

const sockaddr_storage& DatagramBatch::source(int index) const {
  return sources_[static_cast<std::size_t>(index)];
}

socklen_t DatagramBatch::sourceLength(int index) const {
  return messages_[static_cast<std::size_t>(index)].msg_hdr.msg_namelen;
}

std::uint64_t DatagramBatch::bytes(int count) const {
  std::uint64_t total = 0;
  for (int i = 0; i < count; ++i) {
    total += messages_[static_cast<std::size_t>(i)].msg_len;
  }
  return total;
}

}  // namespace iperf3proxy::net
