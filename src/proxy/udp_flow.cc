#include "proxy/udp_flow.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"

namespace iperf3proxy::proxy {
namespace {

// Every UDP socket of a flow gets GRO (fewer, larger receives when the kernel coalesces) and
// buffers of net::kUdpBufferBytes. Where the kernel grants less (net.core.rmem_max/wmem_max for a
// proxy without CAP_NET_ADMIN), the first time is a warning: at high rates datagrams will be lost
// in the proxy's buffers.
void prepareSocket(int fd) {
  net::enableUdpGro(fd);
  const net::SocketBufferSizes granted = net::enlargeSocketBuffers(fd);
  if (granted.receive < net::kUdpBufferBytes || granted.send < net::kUdpBufferBytes) {
    static std::atomic<bool> warned{false};
    const bool first = !warned.exchange(true);
    const auto text = fmt::format(
        "UDP socket buffers capped by the kernel: {} bytes to receive, {} to send, {} asked for; "
        "raise net.core.rmem_max and net.core.wmem_max (or run with CAP_NET_ADMIN) for fast UDP "
        "tests",
        granted.receive, granted.send, net::kUdpBufferBytes);
    if (first) {
      spdlog::warn("{}", text);
    } else {
      spdlog::debug("{}", text);
    }
  }
}

}  // namespace

std::unique_ptr<UdpFlow> UdpFlow::open(ev::EventLoop& loop,
                                       const LoopDatagramIo& io,
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
  prepareSocket(client_socket.get());
  prepareSocket(server_socket.get());
  auto flow = std::unique_ptr<UdpFlow>(new UdpFlow(
      loop, io, proxy_local, client, std::move(client_socket), std::move(server_socket)));
  flow->fromClient(first_datagram);
  return flow;
}

UdpFlow::UdpFlow(ev::EventLoop& loop,
                 const LoopDatagramIo& io,
                 const net::Address& proxy_local,
                 net::Address client,
                 net::UniqueFd client_socket,
                 net::UniqueFd server_socket)
    : client_(client),
      client_socket_(std::move(client_socket)),
      server_socket_(std::move(server_socket)),
      // Between bind() and connect() the client socket was an unconnected socket on the
      // listener's port, and Linux prefers the newer of two equal bindings: a datagram from
      // another source (another test's UDP connect message) could land here. Only this client's
      // datagrams belong here; the others go back to the front, as if the listener had read them.
      up_(loop,
          io,
          client_socket_.get(),
          server_socket_.get(),
          &client_,
          DatagramRelay::kPauseMs,
          io.stray ? DatagramRelay::StrayCallback(
                         [stray = io.stray, proxy_local](const net::Address& source,
                                                         std::span<const std::uint8_t> datagram) {
                           stray(proxy_local, source, datagram);
                         })
                   : nullptr),
      down_(loop, io, server_socket_.get(), client_socket_.get(), nullptr) {
  up_.start();
  down_.start();
}

void UdpFlow::fromClient(std::span<const std::uint8_t> datagram) {
  up_.forward(datagram);
}

}  // namespace iperf3proxy::proxy
