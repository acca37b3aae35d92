#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "net/address.h"
#include "net/unique_fd.h"

namespace iperf3proxy::net {

// Thin, errno-preserving wrappers over the socket calls the proxy makes. Each returns the
// documented failure value and leaves errno for the caller to branch on.

void setNoDelay(int fd);

// Options a test asks for on its data sockets. The proxy sets them on both of its own sockets of
// a data connection, so each hop behaves as the client asked.
struct StreamSocketOptions {
  std::optional<std::string> congestion;
  std::optional<int> tos;
  std::optional<int> window;
  std::optional<int> mss;  // effective only before connect (backend side)
  std::optional<std::uint64_t> pacing_rate_bits;
  bool nodelay = false;
};

// Best effort: an option the kernel refuses leaves the default (the server decides about the
// test itself); returns the names of options that could not be set, for the debug log.
std::string applyStreamOptions(int fd, const StreamSocketOptions& options);

// Starts a non-blocking TCP connect. Returns the socket (connect may still be in progress) or an
// invalid fd with errno set.
// `options`, if given, are applied before connecting (MSS and window only take full effect then).
UniqueFd startConnect(const Address& to, const StreamSocketOptions* options = nullptr);

// The pending error of a socket (SO_ERROR): 0 once a non-blocking connect has succeeded.
int socketError(int fd);

// Bytes written but not yet acknowledged by the peer's TCP (SIOCOUTQ minus unsent is not needed:
// for a freshly connected socket with a few bytes written, 0 means everything was acknowledged,
// which implies the connection is established and queued on the peer's listener).
std::optional<int> unacknowledgedBytes(int fd);

// The receive window the peer last advertised (TCP_INFO tcpi_snd_wnd): it grows back as the
// peer's application reads what it was sent.
std::optional<std::uint32_t> peerReceiveWindow(int fd);

// A non-blocking listening TCP socket. `dual_stack` clears IPV6_V6ONLY on an IPv6 wildcard.
UniqueFd listenTcp(const Address& at, bool dual_stack, std::string* error);

// A non-blocking UDP socket bound to `at` with SO_REUSEADDR, so that the listener and one
// connected socket per client flow can share the proxy's port (as iperf3's server does).
UniqueFd udpSocketBoundTo(const Address& at, std::string* error);

// Socket buffer sizes as the kernel counts them for the payload (getsockopt reports twice that).
struct SocketBufferSizes {
  int receive = 0;
  int send = 0;
};

// Asks for `bytes` of receive and of send buffer, with SO_RCVBUFFORCE/SO_SNDBUFFORCE where allowed
// (CAP_NET_ADMIN), else within net.core.rmem_max/wmem_max. Returns what the kernel granted.
SocketBufferSizes sizeSocketBuffers(int fd, int bytes);

// The proxy's UDP socket buffers (UDP at 1 Gbit/s and more loses datagrams in the default ones):
// kUdpBufferBytes each way. Best effort; returns what was granted.
inline constexpr int kUdpBufferBytes = 8 << 20;
SocketBufferSizes enlargeSocketBuffers(int fd);

// Binds a throwaway socket to port 0 on `host` and returns the port the kernel picked.
std::optional<std::uint16_t> pickFreePort(const Address& host);

std::string errnoText(int error_number);

// Errors of socket() or connect() that are the proxy's own limits, not the peer's doing: out of
// descriptors, memory or local ports. A backend that "fails" this way is not to blame.
bool isLocalResourceError(int error);

}  // namespace iperf3proxy::net
