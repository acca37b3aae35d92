#include "app/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace iperf3proxy::app {

bool notifyServiceManager(std::string_view state, std::string* error) {
  const char* name = std::getenv("NOTIFY_SOCKET");
  if (name == nullptr || *name == '\0') {
    return true;
  }
  const std::string_view path(name);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if ((path[0] != '/' && path[0] != '@') || path.size() > sizeof(address.sun_path)) {
    *error = "NOTIFY_SOCKET is not an absolute path or an abstract name: " + std::string(path);
    return false;
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  if (path[0] == '@') {
    address.sun_path[0] = '\0';  // the abstract namespace: no terminating NUL is part of the name
  }
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                                             (path[0] == '@' ? 0 : 1));
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  // A datagram socket never blocks long here: the manager's queue is large, and MSG_DONTWAIT
  // keeps a stuck manager from stopping the proxy.
  const ssize_t sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                                reinterpret_cast<const sockaddr*>(&address), length);
  const int sent_errno = errno;
  ::close(fd);
  if (sent != static_cast<ssize_t>(state.size())) {
    *error = "sendto " + std::string(path) + ": " + std::strerror(sent_errno);
    return false;
  }
  return true;
}

}  // namespace iperf3proxy::app
