// The readiness message to systemd: one datagram to $NOTIFY_SOCKET, received here by a socket
// in systemd's place (a path, and a name in the abstract namespace).

#include "app/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

namespace iperf3proxy::app {
namespace {

// A datagram socket bound where NOTIFY_SOCKET will point; closed, and the variable unset, at the
// end.
class ServiceManager {
 public:
  explicit ServiceManager(const std::string& name) : name_(name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, name.data(), name.size());
    if (name[0] == '@') {
      address.sun_path[0] = '\0';
    } else {
      ::unlink(name.c_str());
    }
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() +
                                               (name[0] == '@' ? 0 : 1));
    bound_ = ::bind(fd_, reinterpret_cast<const sockaddr*>(&address), length) == 0;
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  }

  ~ServiceManager() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd_);
    if (name_[0] == '/') {
      ::unlink(name_.c_str());
    }
  }

  ServiceManager(const ServiceManager&) = delete;
  ServiceManager& operator=(const ServiceManager&) = delete;

  bool bound() const { return bound_; }

  std::string receive() const {
    std::array<char, 512> buffer{};
    const ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), MSG_DONTWAIT);
    return n < 0 ? std::string("(nothing)")
                 : std::string(buffer.data(), static_cast<std::size_t>(n));
  }

 private:
  std::string name_;
  int fd_ = -1;
  bool bound_ = false;
};

TEST(ServiceManagerNotify, ADatagramToAPathSocket) {
  const ServiceManager manager("/tmp/iperf3-proxy-notify-test-" + std::to_string(::getpid()));
  ASSERT_TRUE(manager.bound());
  std::string error;
  ASSERT_TRUE(notifyServiceManager("READY=1\nSTATUS=listening on [::]:5201", &error)) << error;
  EXPECT_EQ(manager.receive(), "READY=1\nSTATUS=listening on [::]:5201");
}

TEST(ServiceManagerNotify, ADatagramToAnAbstractName) {
  const ServiceManager manager("@iperf3-proxy-notify-test-" + std::to_string(::getpid()));
  ASSERT_TRUE(manager.bound());
  std::string error;
  ASSERT_TRUE(notifyServiceManager("STOPPING=1", &error)) << error;
  EXPECT_EQ(manager.receive(), "STOPPING=1");
}

TEST(ServiceManagerNotify, WithoutNotifySocketNothingIsSent) {
  ::unsetenv("NOTIFY_SOCKET");
  std::string error;
  EXPECT_TRUE(notifyServiceManager("READY=1", &error));
  EXPECT_TRUE(error.empty());
}

TEST(ServiceManagerNotify, ASocketThatIsNotThereIsAnError) {
  ::setenv("NOTIFY_SOCKET", "/nonexistent/notify", 1);
  std::string error;
  EXPECT_FALSE(notifyServiceManager("READY=1", &error));
  EXPECT_NE(error.find("/nonexistent/notify"), std::string::npos) << error;
  ::setenv("NOTIFY_SOCKET", "relative", 1);
  EXPECT_FALSE(notifyServiceManager("READY=1", &error));
  ::unsetenv("NOTIFY_SOCKET");
}

}  // namespace
}  // namespace iperf3proxy::app
