// Component test: StreamPairing with real sockets and a real event loop, a listening socket in
// the role of the iperf3 server and loopback connection pairs in the role of a --bidir -P 1
// client's data connections. It covers what the pure RoleResolver cannot: that a connection
// closed before it is paired is a normal end of a short test, and that what it carried, its EOF
// included, is handed over intact once it is paired.

#include "proxy/stream_pairing.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "ev/io_event.h"
#include "loopback.h"
#include "net/address.h"
#include "proto/cookie.h"

namespace iperf3proxy::proxy {
namespace {

using net::UniqueFd;
using testing::tcpPair;

constexpr std::string_view kCookie = "abcdefghijklmnopqrstuvwxyz234567abcd";
constexpr long kDeadlineMs = 5000;

proto::Cookie cookie() {
  std::vector<std::uint8_t> bytes(kCookie.begin(), kCookie.end());
  bytes.push_back(0);
  return *proto::Cookie::parse(bytes);
}

// A loopback listener in the role of `iperf3 -s`: it accepts in FIFO order, as the server does.
struct Backend {
  UniqueFd listener;
  net::Address address;

  Backend() : listener(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(in);
    EXPECT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&in), length), 0);
    EXPECT_EQ(::listen(listener.get(), 8), 0);
    EXPECT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&in), &length), 0);
    address = net::Address::fromSockaddr(reinterpret_cast<sockaddr*>(&in), length);
  }

  // The next connection the server accepts, its cookie read as the server reads it.
  UniqueFd accept() {
    UniqueFd fd(::accept(listener.get(), nullptr, nullptr));
    std::string got(kCookie.size() + 1, '\0');
    EXPECT_EQ(::recv(fd.get(), got.data(), got.size(), MSG_WAITALL),
              static_cast<ssize_t>(got.size()));
    EXPECT_EQ(got.substr(0, kCookie.size()), kCookie);
    return fd;
  }
};

struct Paired {
  roles::Flow flow;
  UniqueFd client;
  UniqueFd server;
};

std::string readToEnd(int fd) {
  std::string all;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) {
      return n == 0 ? all : all + "<error>";
    }
    all.append(buffer, static_cast<std::size_t>(n));
  }
}

void sendText(int fd, std::string_view text) {
  ASSERT_EQ(::send(fd, text.data(), text.size(), MSG_NOSIGNAL), static_cast<ssize_t>(text.size()));
}

class StreamPairingTest : public ::testing::Test {
 protected:
  // A --bidir -P 1 test whose client opened its sender, then its receiver.
  void SetUp() override {
    proto::TestParams params;
    params.mode = proto::TestMode::Bidirectional;
    params.duration_s = 0;
    pairing_ = std::make_unique<StreamPairing>(
        loop_, params, backend_.address, cookie(), kDeadlineMs, "[test]",
        StreamPairing::Callbacks{
            [this](roles::Flow flow, UniqueFd client, UniqueFd server) {
              paired_.push_back(Paired{flow, std::move(client), std::move(server)});
            },
            [this] { all_paired_ = true; },
            [this](CloseReason reason, std::string detail) {
              failure_ = reason;
              failure_detail_ = std::move(detail);
            }});
    for (UniqueFd* client : {&sender_, &receiver_}) {
      auto [outer, inner] = tcpPair();
      *client = std::move(outer);
      pairing_->addClientStream(std::move(inner), next_port_++);
    }
    ASSERT_TRUE(runUntil([this] { return pairing_->serverStreams() == 2; }));
    server_receiver_ = backend_.accept();  // accepted first: the server's receiving stream
    server_sender_ = backend_.accept();
  }

  // Runs the loop until `done` holds (checked every millisecond) or the deadline passes.
  bool runUntil(const std::function<bool()>& done, long deadline_ms = kDeadlineMs) {
    bool met = done();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
    ev::Timer tick(loop_, [&] {
      met = done();
      if (met || std::chrono::steady_clock::now() >= deadline) {
        loop_.stop();
      } else {
        tick.armMs(1);
      }
    });
    if (!met) {
      tick.armMs(1);
      loop_.run();
    }
    return met;
  }

  // Lets the loop run for a while (for things that must *not* happen).
  void runFor(long ms) {
    runUntil([] { return false; }, ms);
  }

  ev::EventLoop loop_;
  Backend backend_;
  std::unique_ptr<StreamPairing> pairing_;
  std::uint16_t next_port_ = 40000;
  UniqueFd sender_;    // the client's side of its sending connection
  UniqueFd receiver_;  // the client's side of its receiving connection
  UniqueFd server_receiver_;
  UniqueFd server_sender_;
  std::vector<Paired> paired_;
  bool all_paired_ = false;
  std::optional<CloseReason> failure_;
  std::string failure_detail_;
};

TEST_F(StreamPairingTest, NothingIsPairedBeforeTheClientSendsTestData) {
  sendText(server_sender_.get(), "server bytes");
  runFor(50);
  EXPECT_TRUE(paired_.empty());
  EXPECT_FALSE(failure_) << failure_detail_;
}

TEST_F(StreamPairingTest, ServerClosingBeforePairingIsDeliveredWithItsBytesOnceCertain) {
  // A short test: the server sends its few bytes and closes its sending connection (at the
  // client's TEST_END) before the client's roles are known.
  sendText(server_sender_.get(), "last bytes");
  server_sender_.reset();
  runFor(50);
  ASSERT_FALSE(failure_) << failure_detail_;
  EXPECT_TRUE(paired_.empty());
  // The client's data shows its sender; by elimination the other connection receives.
  sendText(sender_.get(), "client bytes");
  ASSERT_TRUE(runUntil([this] { return all_paired_; })) << "paired " << paired_.size();
  ASSERT_EQ(paired_.size(), 2U);
  // Both became certain at once: the download is handed over first.
  EXPECT_EQ(paired_[0].flow, roles::Flow::Download);
  EXPECT_EQ(paired_[1].flow, roles::Flow::Upload);
  // The server's bytes and its EOF wait, untouched, on the backend connection of the pairing.
  EXPECT_EQ(readToEnd(paired_[0].server.get()), "last bytes");
  // The client's bytes were only peeked at.
  char peeked[12];
  EXPECT_EQ(::recv(paired_[1].client.get(), peeked, sizeof(peeked), MSG_DONTWAIT), 12);
  EXPECT_EQ(std::string_view(peeked, 12), "client bytes");
  EXPECT_FALSE(failure_) << failure_detail_;
}

TEST_F(StreamPairingTest, ServerClosingWithoutSendingIsNoFailure) {
  server_sender_.reset();
  server_receiver_.reset();
  runFor(50);
  EXPECT_FALSE(failure_) << failure_detail_;
  sendText(sender_.get(), "x");
  ASSERT_TRUE(runUntil([this] { return all_paired_; }));
  EXPECT_EQ(readToEnd(paired_[0].server.get()), "");
}

TEST_F(StreamPairingTest, ClientClosingAnUnpairedConnectionIsNoFailure) {
  // The client closes its connections after the results; one of them was never paired.
  ASSERT_EQ(::shutdown(receiver_.get(), SHUT_WR), 0);
  runFor(50);
  EXPECT_FALSE(failure_) << failure_detail_;
  EXPECT_TRUE(paired_.empty());
  // An EOF without data is no evidence: the sender's data still decides.
  sendText(sender_.get(), "x");
  ASSERT_TRUE(runUntil([this] { return all_paired_; }));
  ASSERT_EQ(paired_[0].flow, roles::Flow::Download);
  EXPECT_EQ(readToEnd(paired_[0].client.get()), "");
}

TEST_F(StreamPairingTest, AResetOnAnUnpairedConnectionFailsTheTest) {
  const linger abort_on_close{1, 0};
  ASSERT_EQ(
      ::setsockopt(receiver_.get(), SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof(abort_on_close)),
      0);
  receiver_.reset();
  ASSERT_TRUE(runUntil([this] { return failure_.has_value(); }));
  EXPECT_EQ(*failure_, CloseReason::StreamClosedEarly);
  EXPECT_NE(failure_detail_.find("client data connection"), std::string::npos) << failure_detail_;
  EXPECT_TRUE(paired_.empty());
}

}  // namespace
}  // namespace iperf3proxy::proxy
