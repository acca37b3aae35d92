#include "net/socket_ops.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <tuple>
#include <utility>

namespace iperf3proxy::net {

void setNoDelay(int fd) {
  const int on = 1;
  // Best effort: a socket that refuses NODELAY still works, only with Nagle delays.
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

std::string applyStreamOptions(int fd, const StreamSocketOptions& options) {
  std::string failed;
  const auto note = [&failed](int rc, const char* name) {
    if (rc == -1) {
      failed += (failed.empty() ? "" : ", ") + std::string(name) + ": " + errnoText(errno);
    }
  };
  if (options.congestion) {
    note(setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, options.congestion->data(),
                    static_cast<socklen_t>(options.congestion->size())),
         "congestion");
  }
  if (options.tos) {
    const int tos = *options.tos;
    const auto local = localAddress(fd);
    if (local && local->family() == AF_INET6) {
      note(setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof(tos)), "tclass");
    } else {
      note(setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof(tos)), "tos");
    }
  }
  if (options.window) {
    const int window = *options.window;
    note(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &window, sizeof(window)), "sndbuf");
    note(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &window, sizeof(window)), "rcvbuf");
  }
  if (options.mss) {
    const int mss = *options.mss;
    note(setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(mss)), "mss");
  }
  if (options.pacing_rate_bits) {
    // SO_MAX_PACING_RATE takes bytes per second.
    const std::uint64_t bytes = *options.pacing_rate_bits / 8;
    note(setsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &bytes, sizeof(bytes)), "pacing");
  }
  if (options.nodelay) {
    setNoDelay(fd);
  }
  return failed;
}

bool isLocalResourceError(int error) {
  return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM ||
         error == EADDRNOTAVAIL;
}

UniqueFd startConnect(const Address& to, const StreamSocketOptions* options) {
  UniqueFd fd(::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!fd) {
    return fd;
  }
  if (options != nullptr) {
    (void)applyStreamOptions(fd.get(), *options);
  }
  if (::connect(fd.get(), to.sockaddrPtr(), to.length) == -1 && errno != EINPROGRESS) {
    const int saved = errno;
    fd.reset();
    errno = saved;
  }
  return fd;
}

int socketError(int fd) {
  int error = 0;
  socklen_t length = sizeof(error);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == -1) {
    return errno;
  }
  return error;
}

std::optional<int> unacknowledgedBytes(int fd) {
  int bytes = 0;
  if (ioctl(fd, SIOCOUTQ, &bytes) == -1) {
    return std::nullopt;
  }
  return bytes;
}

std::optional<std::uint32_t> peerReceiveWindow(int fd) {
  tcp_info info{};
  socklen_t length = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) == -1) {
    return std::nullopt;
  }
  return info.tcpi_snd_wnd;
}

UniqueFd listenTcp(const Address& at, bool dual_stack, std::string* error) {
  UniqueFd fd(::socket(at.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!fd) {
    *error = "socket: " + errnoText(errno);
    return fd;
  }
  const int on = 1;
  (void)setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (at.family() == AF_INET6) {
    const int v6only = dual_stack ? 0 : 1;
    (void)setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
  }
  if (::bind(fd.get(), at.sockaddrPtr(), at.length) == -1) {
    *error = "bind " + at.toString() + ": " + errnoText(errno);
    fd.reset();
    return fd;
  }
  if (::listen(fd.get(), SOMAXCONN) == -1) {
    *error = "listen " + at.toString() + ": " + errnoText(errno);
    fd.reset();
  }
  return fd;
}

UniqueFd udpSocketBoundTo(const Address& at, std::string* error) {
  UniqueFd fd(::socket(at.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    *error = "udp socket: " + errnoText(errno);
    return fd;
  }
  const int on = 1;
  (void)setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (at.family() == AF_INET6) {
    const int v6only = 0;
    (void)setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
  }
  enlargeSocketBuffers(fd.get());
  if (::bind(fd.get(), at.sockaddrPtr(), at.length) == -1) {
    *error = "udp bind " + at.toString() + ": " + errnoText(errno);
    fd.reset();
  }
  return fd;
}

SocketBufferSizes sizeSocketBuffers(int fd, int bytes) {
  SocketBufferSizes granted;
  for (const auto& [forced, plain, result] :
       {std::tuple{SO_RCVBUFFORCE, SO_RCVBUF, &granted.receive},
        std::tuple{SO_SNDBUFFORCE, SO_SNDBUF, &granted.send}}) {
    if (setsockopt(fd, SOL_SOCKET, forced, &bytes, sizeof(bytes)) == -1) {
      (void)setsockopt(fd, SOL_SOCKET, plain, &bytes, sizeof(bytes));
    }
    int reported = 0;
    socklen_t length = sizeof(reported);
    if (getsockopt(fd, SOL_SOCKET, plain, &reported, &length) == 0) {
      *result = reported / 2;
    }
  }
  return granted;
}

SocketBufferSizes enlargeSocketBuffers(int fd) {
  return sizeSocketBuffers(fd, kUdpBufferBytes);
}

std::optional<std::uint16_t> pickFreePort(const Address& host) {
  UniqueFd fd(::socket(host.family(), SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!fd) {
    return std::nullopt;
  }
  Address any = host;
  any.setPort(0);
  if (::bind(fd.get(), any.sockaddrPtr(), any.length) == -1) {
    return std::nullopt;
  }
  const auto bound = localAddress(fd.get());
  if (!bound) {
    return std::nullopt;
  }
  return bound->port();
}

std::string errnoText(int error_number) {
  return std::strerror(error_number);
}

}  // namespace iperf3proxy::net
