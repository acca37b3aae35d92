#include "proxy/server.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"
#include "proto/udp_handshake.h"
#include "proto/wire.h"
#include "proxy/settings.h"

namespace iperf3proxy::proxy {
namespace {

// Connections accepted per wake-up before other events get a turn.
constexpr int kAcceptBatch = 32;
using fixed::kAcceptPauseMs;
// Datagram receive batches per wake-up on the shared UDP port.
constexpr int kUdpBatchesPerWakeup = 4;
using fixed::kStatsIntervalMs;

// What the iperf3 server writes on a connection it refuses: ACCESS_DENIED.
constexpr std::uint8_t kAccessDeniedByte = 0xff;

std::string_view udpDropName(int why) {
  return why == 0 ? "no UDP test from that address is creating streams"
                  : "not an iperf3 UDP connect message";
}

// Nobody listens (no --metrics).
class NoObserver final : public ServerObserver {
 public:
  void connectionRefused(RefusedConnection) override {}

  void datagramDropped(DroppedDatagram) override {}

  void testRefused(CloseReason) override {}

  void testRunning(std::chrono::duration<double>) override {}

  void testEnded(const TestSummary&) override {}
};

NoObserver no_observer;

}  // namespace

Server::Server(ev::EventLoop& loop,
               const ProxySettings& settings,
               const BackendsConfig& backends,
               const pool::PoolSettings& pool_settings,
               int threads)
    : loop_(loop),
      settings_(settings),
      backends_(loop,
                backends,
                pool_settings,
                Backends::Callbacks{[this](const proto::Cookie& test, const pool::Lease& lease) {
                                      onQueuedGranted(test, lease);
                                    },
                                    [this](const proto::Cookie& test, bool behind_finishing) {
                                      onQueueExpired(test, behind_finishing);
                                    }}),
      observer_(&no_observer),
      refused_log_(loop, "refused connections"),
      busy_log_(loop, "refused tests"),
      udp_drop_log_(loop, "dropped datagrams"),
      recent_(std::chrono::milliseconds(settings.timeouts.recent_cookie_ms),
              static_cast<std::size_t>(settings.limits.recent_cookies)),
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
  if (threads <= 1) {
    inline_worker_ =
        std::make_unique<Worker>(0, loop, loop, static_cast<Front&>(*this), settings, traffic_);
    workers_.push_back(inline_worker_.get());
  } else {
    for (int i = 0; i < threads; ++i) {
      worker_threads_.push_back(
          std::make_unique<WorkerThread>(i, loop, static_cast<Front&>(*this), settings, traffic_));
      workers_.push_back(&worker_threads_.back()->worker());
    }
  }
  worker_load_.assign(workers_.size(), 0);
  stats_tick_.armMs(kStatsIntervalMs);
}

Server::~Server() {
  shutdown();
}

void Server::setObserver(ServerObserver* observer) {
  observer_ = observer != nullptr ? observer : &no_observer;
}

bool Server::startBackends(std::string* error, int* exit_code) {
  return backends_.start(error, exit_code);
}

void Server::logStatsIfChanged() {
  std::string line = statsLine();
  if (line != last_stats_logged_) {
    spdlog::info("stats: {}", line);
    last_stats_logged_ = std::move(line);
  }
}

std::string Server::statsLine() const {
  return stats_.toString() + " | backends: " + backends_.faultSummary();
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

// ---- Accepting and routing by cookie ----------------------------------------------------------

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
    if (!admit(fd, peer)) {
      continue;
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

bool Server::admit(net::UniqueFd& fd, const net::Address& peer) {
  const AddressPolicy& access = settings_.policy.access;
  if (access.empty()) {
    return true;
  }
  const auto address = ipBytesOf(peer.storage);
  const AddressPolicy::Verdict verdict =
      address ? access.check(*address) : AddressPolicy::Verdict{false, "not an IP address"};
  if (verdict.allowed) {
    return true;
  }
  // Answered at once, before its cookie: every client prints "test authorization failed" (the
  // unread cookie may turn the close into a reset, as iperf3's own "busy" answer does; the
  // client has the answer by then).
  ++stats_.refused_denied;
  const auto message = proto::encodeServerError(proto::ierrno::kAuthTest, 0);
  (void)::send(fd.get(), message.data(), message.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  fd.reset();
  refused_log_.log(fmt::format("refused connection from {}: {}", peer.toString(), verdict.why));
  return false;
}

bool Server::atClientLimit(const std::string& client_host) const {
  const int limit = settings_.policy.max_tests_per_client;
  if (limit <= 0) {
    return false;
  }
  const auto it = tests_per_client_.find(client_host);
  return it != tests_per_client_.end() && it->second >= limit;
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
    it->second->stop();
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
  observer_->connectionRefused(ServerObserver::RefusedConnection::Evicted);
  refused_log_.log(fmt::format(
      "refused connection from {}: more than {} connections without a cookie; dropped the oldest",
      oldest->peer().toString(), settings_.limits.max_pending));
  retire(*oldest);
}

void Server::onRejected(PendingConn& pending, PendingConn::Rejection kind, const std::string& why) {
  using Refused = ServerObserver::RefusedConnection;
  switch (kind) {
    case PendingConn::Rejection::Garbage:
      ++stats_.refused_garbage;
      observer_->connectionRefused(Refused::NotACookie);
      break;
    case PendingConn::Rejection::Timeout:
      ++stats_.refused_timeout;
      observer_->connectionRefused(Refused::CookieTimeout);
      break;
    case PendingConn::Rejection::Closed:
    case PendingConn::Rejection::ReadError:
      ++stats_.refused_closed;
      observer_->connectionRefused(Refused::ClosedEarly);
      break;
  }
  refused_log_.log(fmt::format("refused connection from {}: {}", pending.peer().toString(), why));
  retire(pending);
}

void Server::onCookie(PendingConn& pending, proto::Cookie cookie, net::UniqueFd fd) {
  const net::Address peer = pending.peer();
  const auto accepted = pending.accepted();
  retire(pending);
  if (auto it = tests_.find(cookie); it != tests_.end()) {
    Worker* worker = it->second.worker;
    worker->loop().post([worker, cookie, fd = std::move(fd), peer]() mutable {
      worker->attachStream(cookie, std::move(fd), peer);
    });
    return;
  }
  if (recent_.contains(cookie, RecentCookies::Clock::now())) {
    refuseStaleStream(std::move(fd), peer);
    return;
  }
  startTest(cookie, std::move(fd), peer, accepted);
}

void Server::startTest(const proto::Cookie& cookie,
                       net::UniqueFd fd,
                       const net::Address& peer,
                       std::chrono::steady_clock::time_point accepted) {
  if (draining_) {
    refuseTest(std::move(fd), peer, "the proxy is shutting down", CloseReason::Shutdown);
    return;
  }
  if (static_cast<int>(tests_.size()) >= settings_.limits.max_tests) {
    refuseTest(std::move(fd), peer,
               fmt::format("{} tests are already running or queued (--max-tests)", tests_.size()),
               CloseReason::TooManyTests);
    return;
  }
  const std::string client_host = peer.hostString();
  if (atClientLimit(client_host)) {
    ++stats_.refused_per_client;
    refuseTest(std::move(fd), peer,
               fmt::format("{} already has {} tests running or queued (--max-tests-per-client)",
                           client_host, tests_per_client_.at(client_host)),
               CloseReason::TooManyClientTests);
    return;
  }
  auto answer = backends_.request(cookie);
  if (auto* refused = std::get_if<pool::BackendPool::Refused>(&answer)) {
    refuseTest(std::move(fd), peer, refused->why,
               refused->none_up ? CloseReason::BackendUnreachable : CloseReason::NoBackendFree);
    return;
  }
  std::optional<pool::Lease> lease;
  if (auto* granted = std::get_if<pool::Lease>(&answer)) {
    lease = std::move(*granted);
  } else {
    ++stats_.queued_tests;
  }
  Worker& worker = pickWorker();
  ++worker_load_[static_cast<std::size_t>(worker.index())];
  tests_.emplace(cookie, Test{&worker, client_host, {}});
  ++tests_per_client_[client_host];
  worker.loop().post([w = &worker, cookie, fd = std::move(fd), peer, accepted,
                      lease = std::move(lease)]() mutable {
    w->startSession(cookie, std::move(fd), peer, accepted, std::move(lease));
  });
}

Worker& Server::pickWorker() {
  // The least loaded worker; among equals, the next in turn.
  std::size_t best = next_worker_ % workers_.size();
  for (std::size_t step = 0; step < workers_.size(); ++step) {
    const std::size_t i = (next_worker_ + step) % workers_.size();
    if (worker_load_[i] < worker_load_[best]) {
      best = i;
    }
  }
  next_worker_ = best + 1;
  return *workers_[best];
}

void Server::refuseTest(net::UniqueFd fd,
                        const net::Address& peer,
                        const std::string& why,
                        CloseReason reason) {
  ++stats_.refused_tests;
  observer_->testRefused(reason);
  if (reason == CloseReason::BackendUnreachable) {
    // No server to run it on at all: the client prints "unable to connect to server".
    const auto message = proto::encodeServerError(proto::ierrno::kConnect, ECONNREFUSED);
    (void)::send(fd.get(), message.data(), message.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } else {
    // ACCESS_DENIED: every iperf3 client prints "the server is busy running a test".
    (void)::send(fd.get(), &kAccessDeniedByte, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  busy_log_.log(fmt::format("refused a new test from {}: {}", peer.toString(), why));
}

void Server::refuseStaleStream(net::UniqueFd fd, const net::Address& peer) {
  // The test this connection belongs to has ended: it must not start a test of its own.
  ++stats_.stale_streams;
  observer_->connectionRefused(ServerObserver::RefusedConnection::TestEnded);
  (void)::send(fd.get(), &kAccessDeniedByte, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  refused_log_.log(
      fmt::format("refused connection from {}: its test has already ended", peer.toString()));
}

// ---- UDP --------------------------------------------------------------------------------------

void Server::onUdpReadable(Listener& listener) {
  for (int round = 0; round < kUdpBatchesPerWakeup; ++round) {
    const int n = udp_batch_.receive(listener.fd.get());
    if (n <= 0) {
      return;
    }
    for (int i = 0; i < n; ++i) {
      routeDatagram(
          listener.address,
          net::Address::fromSockaddr(reinterpret_cast<const sockaddr*>(&udp_batch_.source(i)),
                                     udp_batch_.sourceLength(i)),
          udp_batch_.datagram(i));
    }
  }
}

void Server::onStrayDatagram(const net::Address& local,
                             const net::Address& source,
                             const std::vector<std::uint8_t>& datagram) {
  spdlog::debug(
      "UDP datagram from {} reached a new flow's socket before it was connected: "
      "routed as if the listener had read it",
      source.toString());
  routeDatagram(local, source, datagram);
}

void Server::routeDatagram(const net::Address& local,
                           const net::Address& source,
                           std::span<const std::uint8_t> datagram) {
  const std::string key = source.toString();
  std::optional<proto::Cookie> owner;
  if (auto known = udp_flows_.find(key); known != udp_flows_.end()) {
    owner = known->second;
  } else {
    // A new flow belongs to the test whose turn it is to set up UDP streams from that address:
    // there is at most one (pool/udp_setup_turns.h).
    owner = udp_turns_.holder(source.hostString());
    if (!owner) {
      dropDatagram(UdpDrop::NoTest, source);
      return;
    }
    // A new flow must open with the connect message every iperf3 client sends; anything else
    // would become a bogus stream at the server (docs/PROTOCOL.md §4.2).
    if (!proto::isUdpConnect(proto::classifyUdpHandshake(datagram))) {
      dropDatagram(UdpDrop::NotConnectMessage, source);
      return;
    }
    udp_flows_.emplace(key, *owner);
    tests_.at(*owner).udp_flows.push_back(key);
  }
  Worker* worker = tests_.at(*owner).worker;
  worker->loop().post([worker, test = *owner, local, source,
                       bytes = std::vector<std::uint8_t>(datagram.begin(), datagram.end())] {
    worker->datagram(test, local, source, bytes);
  });
}

void Server::dropDatagram(UdpDrop why, const net::Address& source) {
  (why == UdpDrop::NoTest ? stats_.udp_no_test : stats_.udp_not_connect)++;
  observer_->datagramDropped(why == UdpDrop::NoTest
                                 ? ServerObserver::DroppedDatagram::NoTest
                                 : ServerObserver::DroppedDatagram::NotConnectMessage);
  udp_drop_log_.log(fmt::format(
      "dropped UDP datagram from {}: {} (dropped so far: {} no test, {} not a connect message)",
      source.toString(), udpDropName(why == UdpDrop::NoTest ? 0 : 1), stats_.udp_no_test,
      stats_.udp_not_connect));
}

void Server::onUdpSetupRequested(const proto::Cookie& test, const std::string& client_host) {
  auto it = tests_.find(test);
  if (it == tests_.end()) {
    return;
  }
  if (udp_turns_.begin(test, client_host)) {
    Worker* worker = it->second.worker;
    worker->loop().post([worker, test] { worker->udpSetupGranted(test); });
  } else {
    spdlog::debug("[s:{}] waits for another test from {} to set up its UDP streams",
                  test.shortForm(), client_host);
  }
}

void Server::onUdpSetupDone(const proto::Cookie& test) {
  if (const auto next = udp_turns_.end(test)) {
    if (auto it = tests_.find(*next); it != tests_.end()) {
      Worker* worker = it->second.worker;
      worker->loop().post([worker, test = *next] { worker->udpSetupGranted(test); });
    }
  }
}

// ---- Backends ---------------------------------------------------------------------------------

void Server::sendNoBackend(const proto::Cookie& test,
                           CloseReason reason,
                           const std::string& detail) {
  auto it = tests_.find(test);
  if (it == tests_.end()) {
    return;
  }
  Worker* worker = it->second.worker;
  worker->loop().post([worker, test, reason, detail] { worker->noBackend(test, reason, detail); });
}

void Server::onQueuedGranted(const proto::Cookie& test, const pool::Lease& lease) {
  auto it = tests_.find(test);
  if (it == tests_.end()) {
    backends_.release(test, false);  // it went away; the next in line gets the backend
    return;
  }
  Worker* worker = it->second.worker;
  worker->loop().post([worker, test, lease] { worker->backendGranted(test, lease); });
}

void Server::onQueueExpired(const proto::Cookie& test, bool behind_finishing) {
  sendNoBackend(test, CloseReason::QueueTimeout,
                behind_finishing
                    ? fmt::format("every backend was running a test, and the one that was "
                                  "finishing did not end within {} ms",
                                  settings_.timeouts.end_linger_ms)
                    : fmt::format("no backend was free within --queue-timeout {} ms",
                                  settings_.timeouts.queue_ms));
}

void Server::onBackendFault(const proto::Cookie& test, pool::BackendFault fault) {
  backends_.fault(test, fault);
  auto it = tests_.find(test);
  if (it == tests_.end()) {
    return;
  }
  auto answer = backends_.request(test);
  if (auto* lease = std::get_if<pool::Lease>(&answer)) {
    Worker* worker = it->second.worker;
    worker->loop().post(
        [worker, test, lease = std::move(*lease)] { worker->backendGranted(test, lease); });
  } else if (auto* refused = std::get_if<pool::BackendPool::Refused>(&answer)) {
    sendNoBackend(test,
                  refused->waited_out ? CloseReason::QueueTimeout
                  : refused->none_up  ? CloseReason::BackendUnreachable
                                      : CloseReason::NoBackendFree,
                  refused->why);
  }
  // Queued: the pool grants it a backend, or lets its deadline pass, later.
}

void Server::onSessionEnded(const proto::Cookie& test,
                            const TestSummary& summary,
                            bool backend_broke) {
  auto it = tests_.find(test);
  if (it == tests_.end()) {
    return;
  }
  ++stats_.tests_ended[static_cast<std::size_t>(summary.reason)];
  observer_->testEnded(summary);
  --worker_load_[static_cast<std::size_t>(it->second.worker->index())];
  for (const auto& key : it->second.udp_flows) {
    udp_flows_.erase(key);
  }
  if (auto count = tests_per_client_.find(it->second.client_host);
      count != tests_per_client_.end() && --count->second <= 0) {
    tests_per_client_.erase(count);
  }
  tests_.erase(it);
  recent_.add(test, RecentCookies::Clock::now());
  onUdpSetupDone(test);
  backends_.release(test, backend_broke);
  checkDrained();
}

// ---- Shutdown ---------------------------------------------------------------------------------

void Server::drain(std::function<void()> drained) {
  draining_ = true;
  drained_ = std::move(drained);
  spdlog::info("draining: no new tests; waiting for {} running test(s)", tests_.size());
  // Tests still waiting for a backend will not get one now.
  std::vector<proto::Cookie> waiting;
  for (const auto& [cookie, test] : tests_) {
    if (!backends_.leased(cookie)) {
      waiting.push_back(cookie);
    }
  }
  for (const auto& cookie : waiting) {
    backends_.release(cookie, false);
    sendNoBackend(cookie, CloseReason::Shutdown, "the proxy is shutting down");
  }
  checkDrained();
}

void Server::checkDrained() {
  if (draining_ && tests_.empty() && drained_) {
    // The callback may stop the loop; take it first so it runs once.
    auto drained = std::exchange(drained_, nullptr);
    drained();
  }
}

void Server::shutdown() {
  if (shut_down_) {
    return;
  }
  shut_down_ = true;
  resume_accepting_.disarm();
  stats_tick_.disarm();
  for (auto* group : {&listeners_, &udp_listeners_}) {
    for (auto& listener : *group) {
      if (listener.readable) {
        listener.readable->disable();
      }
    }
  }
  for (auto& thread : worker_threads_) {
    thread->stop();
  }
  if (inline_worker_) {
    inline_worker_->closeAll(CloseReason::Shutdown);
  }
  for (auto& [key, pending] : pending_) {
    pending->stop();
    loop_.deferredDelete(std::move(pending));
  }
  pending_.clear();
  pending_order_.clear();
  backends_.stop();
}

}  // namespace iperf3proxy::proxy
