#include "proxy/datagram_relay.h"

#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"

namespace iperf3proxy::proxy {
namespace {

// Full receive batches per wake-up before other flows get a turn (level-triggered: the rest
// fires again at once).
constexpr int kBatchesPerWakeup = 4;

// Compares a received source with the expected peer without formatting either: port and address
// bytes of the same family.
bool sameSource(const sockaddr_storage& a, socklen_t a_length, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) {
    return false;
  }
  if (a.ss_family == AF_INET && a_length >= sizeof(sockaddr_in)) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.ss_family == AF_INET6 && a_length >= sizeof(sockaddr_in6)) {
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
    return x.sin6_port == y.sin6_port &&
           std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof(x.sin6_addr)) == 0 &&
           x.sin6_scope_id == y.sin6_scope_id;
  }
  return false;
}

// Errors of a GSO send that say the path cannot take it (an MTU below the datagram size, no
// checksum offload, IPsec): the same datagrams go out one by one instead.
bool gsoRefused(int error) {
  return error == EINVAL || error == EIO || error == EMSGSIZE || error == ENOPROTOOPT ||
         error == EOPNOTSUPP;
}

}  // namespace

DatagramRelay::DatagramRelay(ev::EventLoop& loop,
                             const LoopDatagramIo& io,
                             int from,
                             int to,
                             const net::Address* only_from,
                             long pause_ms,
                             StrayCallback on_stray)
    : batch_(io.batch),
      ticker_(io.ticker),
      from_(from),
      to_(to),
      check_source_(only_from != nullptr),
      on_stray_(std::move(on_stray)),
      pause_ms_(pause_ms),
      readable_(loop, from, ev::IoEvent::Kind::Read, [this] { onReadable(); }),
      writable_(loop, to, ev::IoEvent::Kind::Write, [this] { onWritable(); }),
      pause_over_(loop, [this] { onPauseOver(); }) {
  if (only_from != nullptr) {
    expected_ = only_from->storage;
  }
  if (ticker_ && !ticker_->available()) {
    ticker_.reset();
  }
  window_start_ = std::chrono::steady_clock::now();
}

DatagramRelay::~DatagramRelay() {
  // Only the ticker must forget this relay; its own events go with it.
  if (polling_) {
    ticker_->remove(this);
  }
}

void DatagramRelay::stop() {
  setPolling(false);
  readable_.disable();
  writable_.disable();
  pause_over_.disarm();
}

void DatagramRelay::forward(std::span<const std::uint8_t> datagram) {
  const net::DatagramView view{datagram.data(), static_cast<std::uint32_t>(datagram.size())};
  if (paused()) {
    ++dropped_;  // behind a full destination; the order must not change
    return;
  }
  (void)deliver({&view, 1});
}

void DatagramRelay::onReadable() {
  judgeRate(drain().datagrams);
}

void DatagramRelay::onTick() {
  if (paused()) {
    return;  // waiting for room at the destination; the source keeps what arrives
  }
  const Drained drained = drain();
  if (drained.more_waiting) {
    // More than a turn's worth arrived in one tick: far above the rate polling is for. Back to
    // readiness at once (it fires again right away), and the rate is judged afresh.
    setPolling(false);
    window_start_ = std::chrono::steady_clock::now();
    window_datagrams_ = 0;
    window_bytes_base_ = bytes_;
    return;
  }
  judgeRate(drained.datagrams);
}

void DatagramRelay::judgeRate(std::uint64_t datagrams) {
  window_datagrams_ += datagrams;
  if (!ticker_) {
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  const auto elapsed = now - window_start_;
  if (elapsed < kRateWindow) {
    return;
  }
  const double ticks = std::chrono::duration<double>(elapsed).count() /
                       std::chrono::duration<double>(ticker_->interval()).count();
  setPolling(shouldPoll(polling_, static_cast<double>(window_datagrams_) / ticks,
                        static_cast<double>(bytes_ - window_bytes_base_) / ticks));
  window_start_ = now;
  window_datagrams_ = 0;
  window_bytes_base_ = bytes_;
}

bool DatagramRelay::shouldPoll(bool polling, double datagrams_per_tick, double bytes_per_tick) {
  if (bytes_per_tick > kMaxTickBytes || datagrams_per_tick > kMaxTickDatagrams) {
    return false;
  }
  return polling ? datagrams_per_tick >= kEventsBelowPerTick
                 : datagrams_per_tick >= kPollFromPerTick;
}

void DatagramRelay::setPolling(bool polling) {
  if (polling == polling_ || !ticker_) {
    return;
  }
  polling_ = polling;
  if (polling) {
    readable_.disable();
    ticker_->add(this);
  } else {
    ticker_->remove(this);
    if (!paused()) {
      readable_.enable();
    }
  }
}

DatagramRelay::Drained DatagramRelay::drain() {
  std::uint64_t received = 0;
  for (int round = 0; round < kBatchesPerWakeup; ++round) {
    const int n = batch_.receive(from_);
    if (n <= 0) {
      return {received, false};  // drained, or an error such as ECONNREFUSED from an ICMP
    }
    received += static_cast<std::uint64_t>(n);
    std::span<const net::DatagramView> datagrams = batch_.datagrams();
    if (check_source_) {
      bool all_expected = true;
      for (int i = 0; i < n && all_expected; ++i) {
        all_expected = sameSource(batch_.source(i), batch_.sourceLength(i), expected_);
      }
      if (!all_expected) {
        scratch_.clear();
        for (int i = 0; i < n; ++i) {
          if (sameSource(batch_.source(i), batch_.sourceLength(i), expected_)) {
            scratch_.push_back(datagrams[static_cast<std::size_t>(i)]);
          } else if (on_stray_) {
            on_stray_(
                net::Address::fromSockaddr(reinterpret_cast<const sockaddr*>(&batch_.source(i)),
                                           batch_.sourceLength(i)),
                batch_.datagram(i));
          } else {
            ++dropped_;
          }
        }
        datagrams = scratch_;
      }
    }
    if (!deliver(datagrams)) {
      return {received, false};  // paused: the source is not read until the destination has room
    }
    if (!batch_.filled()) {
      return {received, false};  // drained: a receive now would mostly cost an EAGAIN
    }
  }
  return {received, true};
}

net::SendResult DatagramRelay::send(std::span<const net::DatagramView> datagrams) {
  net::SendResult result = batch_.send(to_, datagrams, gso_);
  if (result.error != 0 && gso_ && gsoRefused(result.error)) {
    gso_ = false;
    spdlog::debug("UDP GSO refused on this path ({}): sending datagram by datagram",
                  net::errnoText(result.error));
    const std::size_t before = result.sent;
    result = batch_.send(to_, datagrams.subspan(before), false);
    result.sent += before;
  }
  bytes_ += net::DatagramBatch::bytes(datagrams.first(result.sent));
  datagrams_ += result.sent;
  return result;
}

bool DatagramRelay::deliver(std::span<const net::DatagramView> datagrams) {
  const net::SendResult result = send(datagrams);
  if (result.sent == datagrams.size()) {
    return true;
  }
  if (result.error == EAGAIN) {
    hold(datagrams.subspan(result.sent));
    return false;
  }
  // ECONNREFUSED (after TEST_END the server's port is closed) and the like: drop. So is ENOBUFS:
  // on a UDP socket without IP_RECVERR it means the kernel could not allocate a buffer, not that
  // the send buffer is full, so the socket stays writable and waiting for room would spin until
  // the pause ran out.
  dropped_ += datagrams.size() - result.sent;
  return true;
}

void DatagramRelay::hold(std::span<const net::DatagramView> datagrams) {
  // Copied: the batch is shared and will be reused before the destination has room.
  held_bytes_.resize(net::DatagramBatch::bytes(datagrams));
  held_.clear();
  std::size_t offset = 0;
  for (const net::DatagramView& view : datagrams) {
    std::memcpy(held_bytes_.data() + offset, view.data, view.size);
    held_.push_back(net::DatagramView{held_bytes_.data() + offset, view.size});
    offset += view.size;
  }
  readable_.disable();
  writable_.enable();
  pause_over_.armMs(pause_ms_);
}

void DatagramRelay::onWritable() {
  const net::SendResult result = send(held_);
  if (result.sent < held_.size() && result.error == EAGAIN) {
    held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(result.sent));
    return;  // still full: wait on (the views still point into held_bytes_)
  }
  dropped_ += held_.size() - result.sent;
  resume();
}

void DatagramRelay::onPauseOver() {
  // The destination stayed full: drop what waited, as a full buffer drops UDP anyway.
  dropped_ += held_.size();
  resume();
}

void DatagramRelay::resume() {
  held_.clear();
  writable_.disable();
  pause_over_.disarm();
  if (!polling_) {
    readable_.enable();
  }
}

}  // namespace iperf3proxy::proxy
