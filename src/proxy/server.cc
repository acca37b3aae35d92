#include "proxy/server.h"

#include <sys/socket.h>

#include <cerrno>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"

namespace iperf3proxy::proxy {
namespace {

// Connections accepted per wake-up before other events get a turn.
constexpr int kAcceptBatch = 32;
// After EMFILE/ENFILE the listener rests this long, then tries again.
constexpr long kAcceptPauseMs = 200;

}  // namespace

Server::Server(ev::EventLoop& loop, const ProxySettings& settings, BackendLookup backend)
    : loop_(loop),
      settings_(settings),
      backend_(std::move(backend)),
      resume_accepting_(loop, [this] {
        for (auto& listener : listeners_) {
          listener.readable->enable();
        }
      }) {}

Server::~Server() {
  shutdown();
}

bool Server::listen(const std::vector<net::Address>& addresses, std::string* error) {
  listeners_.reserve(addresses.size());
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
    listeners_.push_back(Listener{std::move(fd), bound.value_or(address), nullptr});
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
    auto pending = std::make_unique<PendingConn>(
        loop_, std::move(fd), peer, settings_.timeouts.cookie_ms,
        PendingConn::Callbacks{[this](PendingConn& p, proto::Cookie cookie, net::UniqueFd conn) {
                                 onCookie(p, cookie, std::move(conn));
                               },
                               [this](PendingConn& p, const std::string& why) {
                                 onRejected(p, why);
                               }});
    PendingConn* key = pending.get();
    pending_.emplace(key, std::move(pending));
  }
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
  }
}

void Server::onRejected(PendingConn& pending, const std::string& why) {
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
  auto session = std::make_unique<Session>(loop_, settings_, static_cast<SessionOwner&>(*this),
                                           cookie, std::move(fd), peer);
  Session& ref = *session;
  sessions_.emplace(cookie, std::move(session));
  ref.start();
}

void Server::onSessionClosed(Session& session) {
  auto it = sessions_.find(session.cookie());
  if (it != sessions_.end() && it->second.get() == &session) {
    loop_.deferredDelete(std::move(it->second));
    sessions_.erase(it);
  }
}

void Server::shutdown() {
  resume_accepting_.disarm();
  for (auto& listener : listeners_) {
    if (listener.readable) {
      listener.readable->disable();
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
}

}  // namespace iperf3proxy::proxy
