#include "net/datagram_batch.h"

#include <netinet/in.h>
#include <netinet/udp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace iperf3proxy::net {
namespace {

// Control space of one received message (the GRO segment size) and of one sent run (the GSO
// segment size).
constexpr std::size_t kReceiveControl = CMSG_SPACE(sizeof(int));
constexpr std::size_t kSendControl = CMSG_SPACE(sizeof(std::uint16_t));

}  // namespace

void enableUdpGro(int fd) {
  const int on = 1;
  (void)::setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof(on));
}

SendResult DatagramSender::send(int fd, std::span<const DatagramView> datagrams, bool gso) {
  const std::size_t n = datagrams.size();
  runs_.clear();
  for (std::size_t i = 0; i < n;) {
    const std::uint32_t size = datagrams[i].size;
    std::size_t count = 1;
    std::size_t bytes = size;
    if (gso && size > 0) {
      while (i + count < n && count < kMaxSegments) {
        const std::uint32_t next = datagrams[i + count].size;
        if (next > size || next == 0 || bytes + next > kMaxGsoBytes) {
          break;
        }
        bytes += next;
        ++count;
        if (next < size) {
          break;  // a shorter datagram can only end a run
        }
      }
    }
    runs_.push_back(Run{i, count, static_cast<std::uint16_t>(count > 1 ? size : 0)});
    i += count;
  }
  iovecs_.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    // sendmsg does not write through iov_base.
    iovecs_[i] = iovec{const_cast<std::uint8_t*>(datagrams[i].data), datagrams[i].size};
  }
  messages_.resize(runs_.size());
  control_.assign(runs_.size() * kSendControl, 0);
  for (std::size_t r = 0; r < runs_.size(); ++r) {
    const Run& run = runs_[r];
    msghdr& header = messages_[r].msg_hdr;
    header = msghdr{};
    header.msg_iov = &iovecs_[run.first];
    header.msg_iovlen = run.count;
    if (run.segment_size != 0) {
      header.msg_control = &control_[r * kSendControl];
      header.msg_controllen = kSendControl;
      cmsghdr* cmsg = CMSG_FIRSTHDR(&header);
      cmsg->cmsg_level = SOL_UDP;
      cmsg->cmsg_type = UDP_SEGMENT;
      cmsg->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
      std::memcpy(CMSG_DATA(cmsg), &run.segment_size, sizeof(run.segment_size));
    }
  }
  SendResult result;
  std::size_t runs_sent = 0;
  while (runs_sent < runs_.size()) {
    const int sent =
        ::sendmmsg(fd, messages_.data() + runs_sent,
                   static_cast<unsigned>(runs_.size() - runs_sent), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent == -1) {
      if (errno == EINTR) {
        continue;
      }
      result.error = errno;
      break;
    }
    for (int k = 0; k < sent; ++k) {
      result.sent += runs_[runs_sent + static_cast<std::size_t>(k)].count;
    }
    runs_sent += static_cast<std::size_t>(sent);
  }
  return result;
}

DatagramBatch::DatagramBatch(std::size_t capacity)
    : capacity_(capacity),
      storage_(new std::uint8_t[capacity * kMaxDatagram]),
      iovecs_(capacity),
      sources_(capacity),
      messages_(capacity),
      control_(capacity * kReceiveControl) {
  datagrams_.reserve(capacity * 8);
  message_of_.reserve(capacity * 8);
}

int DatagramBatch::receive(int fd) {
  for (std::size_t i = 0; i < capacity_; ++i) {
    iovecs_[i] = iovec{storage_.get() + i * kMaxDatagram, kMaxDatagram};
    messages_[i] = mmsghdr{};
    msghdr& header = messages_[i].msg_hdr;
    header.msg_iov = &iovecs_[i];
    header.msg_iovlen = 1;
    header.msg_name = &sources_[i];
    header.msg_namelen = sizeof(sockaddr_storage);
    header.msg_control = &control_[i * kReceiveControl];
    header.msg_controllen = kReceiveControl;
  }
  datagrams_.clear();
  message_of_.clear();
  messages_received_ = 0;
  const int n =
      ::recvmmsg(fd, messages_.data(), static_cast<unsigned>(capacity_), MSG_DONTWAIT, nullptr);
  if (n == -1) {
    return errno == EAGAIN || errno == EINTR ? 0 : -1;
  }
  messages_received_ = static_cast<std::size_t>(n);
  for (int m = 0; m < n; ++m) {
    const auto index = static_cast<std::size_t>(m);
    msghdr& header = messages_[index].msg_hdr;
    const std::uint32_t length = messages_[index].msg_len;
    std::uint32_t segment = length;
    for (cmsghdr* cmsg = CMSG_FIRSTHDR(&header); cmsg != nullptr;
         cmsg = CMSG_NXTHDR(&header, cmsg)) {
      if (cmsg->cmsg_level == SOL_UDP && cmsg->cmsg_type == UDP_GRO) {
        int gro_size = 0;
        std::memcpy(&gro_size, CMSG_DATA(cmsg), sizeof(gro_size));
        if (gro_size > 0) {
          segment = static_cast<std::uint32_t>(gro_size);
        }
      }
    }
    const std::uint8_t* base = storage_.get() + index * kMaxDatagram;
    std::uint32_t offset = 0;
    do {
      const std::uint32_t size = std::min(segment, length - offset);
      datagrams_.push_back(DatagramView{base + offset, size});
      message_of_.push_back(static_cast<std::uint32_t>(m));
      offset += size;
    } while (offset < length);
  }
  return static_cast<int>(datagrams_.size());
}

SendResult DatagramBatch::send(int fd, int first, int count, bool gso) {
  return sender_.send(
      fd,
      std::span<const DatagramView>(datagrams_)
          .subspan(static_cast<std::size_t>(first), static_cast<std::size_t>(count)),
      gso);
}

std::span<const std::uint8_t> DatagramBatch::datagram(int index) const {
  const DatagramView& view = datagrams_[static_cast<std::size_t>(index)];
  return {view.data, view.size};
}

const sockaddr_storage& DatagramBatch::source(int index) const {
  return sources_[message_of_[static_cast<std::size_t>(index)]];
}

socklen_t DatagramBatch::sourceLength(int index) const {
  return messages_[message_of_[static_cast<std::size_t>(index)]].msg_hdr.msg_namelen;
}

std::uint64_t DatagramBatch::bytes(std::span<const DatagramView> datagrams) {
  std::uint64_t total = 0;
  for (const DatagramView& view : datagrams) {
    total += view.size;
  }
  return total;
}

}  // namespace iperf3proxy::net
