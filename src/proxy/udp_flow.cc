#include "proxy/udp_flow.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "net/socket_ops.h"

namespace iperf3proxy::proxy {
namespace {

// Receive batches per wake-up before other flows get a turn (level-triggered: the rest fires
// again at once).
constexpr int kBatchesPerWakeup = 4;

bool sameEndpoint(const sockaddr_storage& a, socklen_t a_length, const net::Address& b) {
  const net::Address from =
      net::Address::fromSockaddr(reinterpret_cast<const sockaddr*>(&a), a_length);
  return from.port() == b.port() && from.hostString() == b.hostString();
}

}  // namespace

std::unique_ptr<UdpFlow> UdpFlow::open(ev::EventLoop& loop,
                                       net::DatagramBatch& batch,
                                       const net::Address& proxy_local,
                                       const net::Address& client,
                                       const net::Address& backend,
                                       std::span<const std::uint8_t> first_datagram,
                                       std::string* error) {
  net::UniqueFd client_socket = net::udpSocketBoundTo(proxy_local, error);
  if (!client_socket) {
    return nullptr;
  }
  if (::connect(client_socket.get(), client.sockaddrPtr(), client.length) == -1) {
    *error = "connect to client " + client.toString() + ": " + net::errnoText(errno);
    return nullptr;
  }
  net::UniqueFd server_socket =
      net::UniqueFd(::socket(backend.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!server_socket ||
      ::connect(server_socket.get(), backend.sockaddrPtr(), backend.length) == -1) {
    *error = "connect to backend " + backend.toString() + ": " + net::errnoText(errno);
    return nullptr;
  }
  net::enlargeSocketBuffers(server_socket.get());
  auto flow = std::unique_ptr<UdpFlow>(
      new UdpFlow(loop, batch, client, std::move(client_socket), std::move(server_socket)));
  flow->fromClient(first_datagram);
  return flow;
}

UdpFlow::UdpFlow(ev::EventLoop& loop,
                 net::DatagramBatch& batch,
                 net::Address client,
                 net::UniqueFd client_socket,
                 net::UniqueFd server_socket)
    : batch_(batch),
      client_(client),
      client_socket_(std::move(client_socket)),
      server_socket_(std::move(server_socket)),
      client_readable_(
          loop, client_socket_.get(), ev::IoEvent::Kind::Read, [this] { onClientReadable(); }),
      server_readable_(
          loop, server_socket_.get(), ev::IoEvent::Kind::Read, [this] { onServerReadable(); }) {
  client_readable_.enable();
  server_readable_.enable();
}

void UdpFlow::fromClient(std::span<const std::uint8_t> datagram) {
  if (::send(server_socket_.get(), datagram.data(), datagram.size(), MSG_DONTWAIT | MSG_NOSIGNAL) ==
      static_cast<ssize_t>(datagram.size())) {
    bytes_up_ += datagram.size();
    ++datagrams_up_;
  } else {
    ++dropped_;
  }
}

void UdpFlow::onClientReadable() {
  for (int round = 0; round < kBatchesPerWakeup; ++round) {
    const int n = batch_.receive(client_socket_.get());
    if (n <= 0) {
      return;  // drained, or an error such as ECONNREFUSED from an ICMP: nothing to relay
    }
    // Before connect() the socket was briefly bound but unconnected and could have caught a
    // datagram of another source; only this client's datagrams belong here.
    bool all_from_client = true;
    for (int i = 0; i < n; ++i) {
      all_from_client =
          all_from_client && sameEndpoint(batch_.source(i), batch_.sourceLength(i), client_);
    }
    if (!all_from_client) {
      for (int i = 0; i < n; ++i) {
        if (sameEndpoint(batch_.source(i), batch_.sourceLength(i), client_)) {
          fromClient(batch_.datagram(i));
        } else {
          ++dropped_;
        }
      }
      continue;
    }
    const int sent = batch_.sendConnected(server_socket_.get(), n);
    datagrams_up_ += static_cast<std::uint64_t>(sent);
    bytes_up_ += batch_.bytes(sent);
    dropped_ += static_cast<std::uint64_t>(n - sent);
  }
}

void UdpFlow::onServerReadable() {
  for (int round = 0; round < kBatchesPerWakeup; ++round) {
    const int n = batch_.receive(server_socket_.get());
    if (n <= 0) {
      return;  // after TEST_END the server's port is closed: ECONNREFUSED is expected
    }
    const int sent = batch_.sendConnected(client_socket_.get(), n);
    datagrams_down_ += static_cast<std::uint64_t>(sent);
    bytes_down_ += batch_.bytes(sent);
    dropped_ += static_cast<std::uint64_t>(n - sent);
  }
}

}  // namespace iperf3proxy::proxy
