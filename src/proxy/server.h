#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/datagram_batch.h"
#include "net/unique_fd.h"
#include "proto/cookie.h"
#include "proxy/pending_conn.h"
#include "proxy/session.h"
#include "proxy/settings.h"
#include "proxy/stats.h"

namespace iperf3proxy::proxy {

// Accepts TCP connections on the proxy's port and routes each by its cookie: a cookie no live
// test holds starts a new Session (it is a control connection); a known cookie is a data
// connection of that test. Owns every pending connection and every session (the registry).
class Server : private SessionOwner {
 public:
  using BackendLookup = std::function<std::optional<net::Address>()>;

  Server(ev::EventLoop& loop, const ProxySettings& settings, BackendLookup backend);
  ~Server() override;
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts listening. Returns false with `error` set if no address could be bound.
  bool listen(const std::vector<net::Address>& addresses, std::string* error);

  // The addresses actually bound (port 0 resolved), for the ready line.
  std::vector<net::Address> boundAddresses() const;

  // Stops starting new tests (a new control connection is answered "busy"; data connections
  // of running tests still come in) and calls `drained` once the last test has ended.
  void drain(std::function<void()> drained);

  // Stops accepting and closes every session now.
  void shutdown();

  std::size_t sessionCount() const { return sessions_.size(); }

  const ProxyStats& stats() const { return stats_; }

 private:
  struct Listener {
    net::UniqueFd fd;
    net::Address address;
    std::unique_ptr<ev::IoEvent> readable;
  };

  // Why a datagram on the shared UDP port was not relayed.
  enum class UdpDrop { NoTest, SeveralTests, NotConnectMessage };

  void onAcceptable(Listener& listener);
  void onUdpReadable(Listener& listener);
  void dropDatagram(UdpDrop why, const net::Address& source);
  void pauseAccepting();
  void onCookie(PendingConn& pending, proto::Cookie cookie, net::UniqueFd fd);
  void onRejected(PendingConn& pending, PendingConn::Rejection kind, const std::string& why);
  void logStatsIfChanged();
  void retire(PendingConn& pending);
  void evictOldestPending();
  void refuseTest(net::UniqueFd fd, const net::Address& peer, const std::string& why);
  void checkDrained();

  // proxy::SessionOwner
  std::optional<net::Address> backendAddress() override { return backend_(); }

  net::DatagramBatch& udpBatch() override { return udp_batch_; }

  bool backendFinishingTest(const Session& asking) override;

  void onSessionClosed(Session& session) override;

  ev::EventLoop& loop_;
  const ProxySettings& settings_;
  BackendLookup backend_;
  std::vector<Listener> listeners_;
  std::vector<Listener> udp_listeners_;
  net::DatagramBatch udp_batch_;
  ProxyStats stats_;
  std::string last_stats_logged_;
  std::uint64_t udp_drops_unlogged_ = 0;
  std::chrono::steady_clock::time_point last_udp_drop_log_{};
  std::unordered_map<PendingConn*, std::unique_ptr<PendingConn>> pending_;
  std::deque<PendingConn*> pending_order_;  // oldest first, for eviction
  std::unordered_map<proto::Cookie, std::unique_ptr<Session>, proto::CookieHash> sessions_;
  ev::Timer resume_accepting_;
  ev::Timer stats_tick_;
  bool draining_ = false;
  std::function<void()> drained_;
};

}  // namespace iperf3proxy::proxy
