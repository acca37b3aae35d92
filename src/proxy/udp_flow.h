#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/datagram_batch.h"
#include "net/unique_fd.h"
#include "proxy/datagram_relay.h"

namespace iperf3proxy::proxy {

// One iperf3 UDP stream: the client's source address and port, relayed datagram for datagram to
// the backend from a socket of its own (the server tells its UDP streams apart only by source
// address, docs/PROTOCOL.md §4.4).
//
// Client side: a socket bound to the proxy's own UDP port and connected to the client, the way
// iperf3's server does it: the kernel hands it exactly this client's datagrams, and what it
// sends comes from the address and port the client targeted, which the client's connected socket
// requires. Server side: a socket connected to the backend, on a fresh ephemeral port.
// Each direction is a DatagramRelay (batches, GRO/GSO, a pause instead of a drop when the
// destination is full).
class UdpFlow {
 public:
  // Creates both sockets and forwards the flow's first datagram. Returns null (with `error`)
  // if a socket cannot be set up.
  static std::unique_ptr<UdpFlow> open(ev::EventLoop& loop,
                                       const LoopDatagramIo& io,  // its batch outlives the flow
                                       const net::Address& proxy_local,
                                       const net::Address& client,
                                       const net::Address& backend,
                                       std::span<const std::uint8_t> first_datagram,
                                       std::string* error);

  UdpFlow(const UdpFlow&) = delete;
  UdpFlow& operator=(const UdpFlow&) = delete;

  // A datagram of this flow that reached the shared listener instead (only in the moment before
  // the flow's own socket was connected).
  void fromClient(std::span<const std::uint8_t> datagram);

  const net::Address& client() const { return client_; }

  // The socket connected to the client and the one connected to the server.
  int clientFd() const { return client_socket_.get(); }

  int serverFd() const { return server_socket_.get(); }

  std::uint64_t bytesFromClient() const { return up_.bytes(); }

  std::uint64_t bytesFromServer() const { return down_.bytes(); }

  std::uint64_t datagramsFromClient() const { return up_.datagrams(); }

  std::uint64_t datagramsFromServer() const { return down_.datagrams(); }

  std::uint64_t dropped() const { return up_.dropped() + down_.dropped(); }

  bool replied() const { return down_.datagrams() > 0; }

  // No more I/O (the test is closing).
  void stop() {
    up_.stop();
    down_.stop();
  }

 private:
  UdpFlow(ev::EventLoop& loop,
          const LoopDatagramIo& io,
          const net::Address& proxy_local,
          net::Address client,
          net::UniqueFd client_socket,
          net::UniqueFd server_socket);

  net::Address client_;
  net::UniqueFd client_socket_;
  net::UniqueFd server_socket_;
  DatagramRelay up_;    // client -> server
  DatagramRelay down_;  // server -> client
};

}  // namespace iperf3proxy::proxy
