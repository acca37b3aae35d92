#include "proxy/server.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"
#include "proto/udp_handshake.h"

namespace iperf3proxy::proxy {
namespace {

// Connections accepted per wake-up before other events get a turn.
constexpr int kAcceptBatch = 32;
// After EMFILE/ENFILE the listener rests this long, then tries again.
constexpr long kAcceptPauseMs = 200;
// Datagram receive batches per wake-up on the shared UDP port.
constexpr int kUdpBatchesPerWakeup = 4;
// At most one log line per this interval about datagrams that were dropped.
constexpr auto kUdpDropLogInterval = std::chrono::seconds(1);
// How often the counters are logged (only when they changed).
constexpr long kStatsIntervalMs = 60'000;

std::string_view udpDropName(int why) {
  switch (why) {
    case 0:
      return "no UDP test from that address is creating streams";
    case 1:
      return "several tests from that address are creating streams";
    default:
      return "not an iperf3 UDP connect message";
  }
}

}  // namespace

Server::Server(ev::EventLoop& loop, const ProxySettings& settings, BackendLookup backend)
    : loop_(loop),
      settings_(settings),
      backend_(std::move(backend)),
      resume_accepting_(loop,
                        [this] {
                          for (auto& listener : listeners_) {
                            listener.readable->enable();
                          }
                        }),
      stats_tick_(loop, [this] {
        logStatsIfChanged();
        stats_tick_.armMs(kStatsIntervalMs);
      }) {
  stats_tick_.armMs(kStatsIntervalMs);
}

void Server::logStatsIfChanged() {
  std::string line = stats_.toString();
  if (line != last_stats_logged_) {
    spdlog::info("stats: {}", line);
    last_stats_logged_ = std::move(line);
  }
}

Server::~Server() {
  shutdown();
}

bool Server::listen(const std::vector<net::Address>& addresses, std::string* error) {
  listeners_.reserve(addresses.size());
  udp_listeners_.reserve(addresses.size());
  for (const auto& address : addresses) {
    std::string why;
    // A wildcard IPv6 listener also takes IPv4 (dual stack), unless IPv6 is unavailable, in
    // which case the caller passes an IPv4 wildcard instead.
    net::UniqueFd fd = net::listenTcp(address, /*dual_stack=*/true, &why);
    if (!fd) {
      *error = why;
      return false;
    }
    const auto bound = net::localAddress(fd.get());
    // iperf3 sends UDP test data to the same port number as the control connection.
    net::UniqueFd udp = net::udpSocketBoundTo(bound.value_or(address), &why);
    if (!udp) {
      *error = why;
      return false;
    }
    udp_listeners_.push_back(Listener{std::move(udp), bound.value_or(address), nullptr});
    listeners_.push_back(Listener{std::move(fd), bound.value_or(address), nullptr});
  }
  for (auto& listener : udp_listeners_) {
    listener.readable =
        std::make_unique<ev::IoEvent>(loop_, listener.fd.get(), ev::IoEvent::Kind::Read,
                                      [this, l = &listener] { onUdpReadable(*l); });
    listener.readable->enable();
  }
  for (auto& listener : listeners_) {
    listener.readable =
        std::make_unique<ev::IoEvent>(loop_, listener.fd.get(), ev::IoEvent::Kind::Read,
                                      [this, l = &listener] { onAcceptable(*l); });
    listener.readable->enable();
  }
  return true;
}

std::vector<net::Address> Server::boundAddresses() const {
  std::vector<net::Address> result;
  for (const auto& listener : listeners_) {
    result.push_back(listener.address);
  }
  return result;
}

void Server::onAcceptable(Listener& listener) {
  for (int i = 0; i < kAcceptBatch; ++i) {
    net::Address peer;
    peer.length = sizeof(peer.storage);
    net::UniqueFd fd(::accept4(listener.fd.get(), peer.sockaddrPtr(), &peer.length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        spdlog::warn("accept: {}; pausing new connections for {} ms", net::errnoText(errno),
                     kAcceptPauseMs);
        pauseAccepting();
      }
      // EAGAIN: drained. ECONNABORTED and the like: that connection is gone; nothing to do.
      return;
    }
    if (static_cast<int>(pending_.size()) >= settings_.limits.max_pending) {
      evictOldestPending();
    }
    auto pending = std::make_unique<PendingConn>(
        loop_, std::move(fd), peer, settings_.timeouts.cookie_ms,
        PendingConn::Callbacks{
            [this](PendingConn& p, proto::Cookie cookie, net::UniqueFd conn) {
              onCookie(p, cookie, std::move(conn));
            },
            [this](PendingConn& p, PendingConn::Rejection kind, const std::string& why) {
              onRejected(p, kind, why);
            }});
    PendingConn* key = pending.get();
    pending_.emplace(key, std::move(pending));
    pending_order_.push_back(key);
  }
}

void Server::onUdpReadable(Listener& listener) {
  for (int round = 0; round < kUdpBatchesPerWakeup; ++round) {
    const int n = udp_batch_.receive(listener.fd.get());
    if (n <= 0) {
      return;
    }
    for (int i = 0; i < n; ++i) {
      const auto source = net::Address::fromSockaddr(
          reinterpret_cast<const sockaddr*>(&udp_batch_.source(i)), udp_batch_.sourceLength(i));
      const auto datagram = udp_batch_.datagram(i);
      bool routed = false;
      for (auto& [cookie, session] : sessions_) {
        if (session->routeUdp(source, datagram)) {
          routed = true;
          break;
        }
      }
      if (routed) {
        continue;
      }
      Session* owner = nullptr;
      int candidates = 0;
      for (auto& [cookie, session] : sessions_) {
        if (session->wantsUdpFlowFrom(source)) {
          owner = session.get();
          ++candidates;
        }
      }
      if (candidates != 1) {
        dropDatagram(candidates == 0 ? UdpDrop::NoTest : UdpDrop::SeveralTests, source);
        continue;
      }
      // A new flow must open with the connect message every iperf3 client sends; anything else
      // would become a bogus stream at the server (protocol §4.2).
      if (!proto::isUdpConnect(proto::classifyUdpHandshake(datagram))) {
        dropDatagram(UdpDrop::NotConnectMessage, source);
        continue;
      }
      owner->attachUdpFlow(listener.address, source, datagram);
    }
  }
}

void Server::dropDatagram(UdpDrop why, const net::Address& source) {
  const auto index = static_cast<std::size_t>(why);
  switch (why) {
    case UdpDrop::NoTest:
      ++stats_.udp_no_test;
      break;
    case UdpDrop::SeveralTests:
      ++stats_.udp_ambiguous;
      break;
    case UdpDrop::NotConnectMessage:
      ++stats_.udp_not_connect;
      break;
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - last_udp_drop_log_ < kUdpDropLogInterval) {
    ++udp_drops_unlogged_;
    return;
  }
  last_udp_drop_log_ = now;
  spdlog::warn(
      "dropped UDP datagram from {}: {} (dropped so far: {} no test, {} ambiguous, {} "
      "not a connect message; {} not logged)",
      source.toString(), udpDropName(static_cast<int>(index)), stats_.udp_no_test,
      stats_.udp_ambiguous, stats_.udp_not_connect, udp_drops_unlogged_);
  udp_drops_unlogged_ = 0;
}

void Server::pauseAccepting() {
  for (auto& listener : listeners_) {
    listener.readable->disable();
  }
  resume_accepting_.armMs(kAcceptPauseMs);
}

void Server::retire(PendingConn& pending) {
  auto it = pending_.find(&pending);
  if (it != pending_.end()) {
    loop_.deferredDelete(std::move(it->second));
    pending_.erase(it);
    std::erase(pending_order_, &pending);
  }
}

void Server::evictOldestPending() {
  // Idle and slow connections must not crowd out real tests: when too many have not shown a
  // cookie yet, the one that has waited longest makes room.
  PendingConn* oldest = pending_order_.front();
  ++stats_.evicted_pending;
  spdlog::warn(
      "refused connection from {}: more than {} connections without a cookie; dropped "
      "the oldest",
      oldest->peer().toString(), settings_.limits.max_pending);
  retire(*oldest);
}

void Server::refuseTest(net::UniqueFd fd, const net::Address& peer, const std::string& why) {
  // ACCESS_DENIED: every iperf3 client prints "the server is busy running a test".
  ++stats_.refused_tests;
  const std::uint8_t access_denied = 0xff;
  (void)::send(fd.get(), &access_denied, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  spdlog::warn("refused a new test from {}: {}", peer.toString(), why);
}

void Server::onRejected(PendingConn& pending, PendingConn::Rejection kind, const std::string& why) {
  switch (kind) {
    case PendingConn::Rejection::Garbage:
      ++stats_.refused_garbage;
      break;
    case PendingConn::Rejection::Timeout:
      ++stats_.refused_timeout;
      break;
    case PendingConn::Rejection::Closed:
    case PendingConn::Rejection::ReadError:
      ++stats_.refused_closed;
      break;
  }
  spdlog::warn("refused connection from {}: {}", pending.peer().toString(), why);
  retire(pending);
}

void Server::onCookie(PendingConn& pending, proto::Cookie cookie, net::UniqueFd fd) {
  const net::Address peer = pending.peer();
  retire(pending);
  if (auto it = sessions_.find(cookie); it != sessions_.end()) {
    it->second->attachStream(std::move(fd), peer);
    return;
  }
  if (draining_) {
    refuseTest(std::move(fd), peer, "the proxy is shutting down");
    return;
  }
  if (static_cast<int>(sessions_.size()) >= settings_.limits.max_tests) {
    refuseTest(std::move(fd), peer,
               fmt::format("{} tests are already running (--max-tests)", sessions_.size()));
    return;
  }
  auto session = std::make_unique<Session>(loop_, settings_, static_cast<SessionOwner&>(*this),
                                           cookie, std::move(fd), peer);
  Session& ref = *session;
  sessions_.emplace(cookie, std::move(session));
  ref.start();
}

void Server::onSessionClosed(Session& session) {
  ++stats_.tests_ended[static_cast<std::size_t>(session.closeReason())];
  auto it = sessions_.find(session.cookie());
  if (it != sessions_.end() && it->second.get() == &session) {
    loop_.deferredDelete(std::move(it->second));
    sessions_.erase(it);
  }
  checkDrained();
}

void Server::drain(std::function<void()> drained) {
  draining_ = true;
  drained_ = std::move(drained);
  spdlog::info("draining: no new tests; waiting for {} running test(s)", sessions_.size());
  checkDrained();
}

void Server::checkDrained() {
  if (draining_ && sessions_.empty() && drained_) {
    // The callback may stop the loop; take it first so it runs once.
    auto drained = std::exchange(drained_, nullptr);
    drained();
  }
}

bool Server::backendFinishingTest(const Session& asking) {
  for (const auto& [cookie, session] : sessions_) {
    if (session.get() != &asking && session->finishingWithBackend()) {
      return true;
    }
  }
  return false;
}

void Server::shutdown() {
  resume_accepting_.disarm();
  stats_tick_.disarm();
  for (auto* group : {&listeners_, &udp_listeners_}) {
    for (auto& listener : *group) {
      if (listener.readable) {
        listener.readable->disable();
      }
    }
  }
  // close() calls back into onSessionClosed, which erases: iterate over a snapshot.
  std::vector<Session*> open;
  for (auto& [cookie, session] : sessions_) {
    open.push_back(session.get());
  }
  for (Session* session : open) {
    session->close(CloseReason::Shutdown);
  }
  for (auto& [key, pending] : pending_) {
    loop_.deferredDelete(std::move(pending));
  }
  pending_.clear();
  pending_order_.clear();
}

}  // namespace iperf3proxy::proxy
