// Component test: the splice pump between two real TCP connections on loopback, driven by a real
// event loop. Peers run in threads with blocking sockets; the loop runs in the test's thread.

#include "proxy/splice_pump.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "loopback.h"
#include "net/unique_fd.h"

namespace iperf3proxy::proxy {
namespace {

using net::UniqueFd;
using testing::tcpPair;

constexpr std::uint64_t kGiB = 1ULL << 30;

// Deterministic pseudo-random bytes (xorshift64*), so both ends can agree on a digest.
class ByteStream {
 public:
  explicit ByteStream(std::uint64_t seed) : state_(seed | 1) {}

  void fill(std::vector<std::uint8_t>& buffer) {
    for (std::size_t i = 0; i + 8 <= buffer.size(); i += 8) {
      state_ ^= state_ >> 12;
      state_ ^= state_ << 25;
      state_ ^= state_ >> 27;
      const std::uint64_t word = state_ * 0x2545F4914F6CDD1DULL;
      std::memcpy(&buffer[i], &word, 8);
    }
  }

 private:
  std::uint64_t state_;
};

// FNV-1a over 64-bit words: order-sensitive and cheap enough for gigabytes.
struct Digest {
  std::uint64_t value = 0xcbf29ce484222325ULL;
  std::uint64_t bytes = 0;

  void add(const std::uint8_t* data, std::size_t size) {
    for (std::size_t i = 0; i < size; ++i) {
      value = (value ^ data[i]) * 0x100000001b3ULL;
    }
    bytes += size;
  }
};

struct Transfer {
  Digest sent;
  Digest received;
};

// Writes `total` bytes into `fd`.
void sendBytes(int fd, std::uint64_t total, std::uint64_t seed, Digest& digest) {
  ByteStream stream(seed);
  std::vector<std::uint8_t> buffer(256 * 1024);
  std::uint64_t left = total;
  while (left > 0) {
    stream.fill(buffer);
    const std::size_t chunk =
        static_cast<std::size_t>(std::min<std::uint64_t>(left, buffer.size()));
    std::size_t offset = 0;
    while (offset < chunk) {
      const ssize_t n = ::send(fd, buffer.data() + offset, chunk - offset, MSG_NOSIGNAL);
      ASSERT_GT(n, 0);
      offset += static_cast<std::size_t>(n);
    }
    digest.add(buffer.data(), chunk);
    left -= chunk;
  }
}

// Writes `total` bytes into `fd`, then half-closes it.
void sendAll(int fd, std::uint64_t total, std::uint64_t seed, Digest& digest) {
  sendBytes(fd, total, seed, digest);
  ASSERT_EQ(::shutdown(fd, SHUT_WR), 0);
}

// Reads until EOF.
void receiveAll(int fd, Digest& digest) {
  std::vector<std::uint8_t> buffer(256 * 1024);
  for (;;) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    ASSERT_GE(n, 0);
    if (n == 0) {
      return;
    }
    digest.add(buffer.data(), static_cast<std::size_t>(n));
  }
}

class SplicePumpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto [client, proxy_client_side] = tcpPair();
    auto [server, proxy_server_side] = tcpPair();
    client_ = std::move(client);
    server_ = std::move(server);
    proxy_client_side_ = std::move(proxy_client_side);
    proxy_server_side_ = std::move(proxy_server_side);
    pump_ = std::make_unique<SplicePump>(loop_, proxy_client_side_.get(), proxy_server_side_.get(),
                                         [this](const SplicePump::Completion& completion) {
                                           completion_ = completion;
                                           done_ = true;
                                           loop_.stop();
                                         });
    ASSERT_TRUE(pump_->start());
  }

  ev::EventLoop loop_;
  UniqueFd client_;
  UniqueFd server_;
  UniqueFd proxy_client_side_;
  UniqueFd proxy_server_side_;
  std::unique_ptr<SplicePump> pump_;
  SplicePump::Completion completion_{};
  bool done_ = false;
};

TEST_F(SplicePumpTest, MovesOneGibibyteEachWayExactlyWithHalfClosePerDirection) {
  Transfer upload;
  Transfer download;
  // Both directions run at once; each half-closes on its own, and the other keeps flowing.
  std::thread client_writer([&] { sendAll(client_.get(), kGiB, 1, upload.sent); });
  std::thread server_reader([&] { receiveAll(server_.get(), upload.received); });
  std::thread server_writer([&] { sendAll(server_.get(), kGiB + 12345, 2, download.sent); });
  std::thread client_reader([&] { receiveAll(client_.get(), download.received); });
  loop_.run();
  client_writer.join();
  server_reader.join();
  server_writer.join();
  client_reader.join();

  ASSERT_TRUE(done_);
  EXPECT_EQ(completion_.outcome, SplicePump::Outcome::Closed);
  EXPECT_EQ(upload.sent.bytes, kGiB);
  EXPECT_EQ(upload.received.bytes, kGiB);
  EXPECT_EQ(upload.received.value, upload.sent.value);
  EXPECT_EQ(download.received.bytes, kGiB + 12345);
  EXPECT_EQ(download.received.value, download.sent.value);
  EXPECT_EQ(pump_->bytesFirstToSecond(), kGiB);
  EXPECT_EQ(pump_->bytesSecondToFirst(), kGiB + 12345);
}

TEST_F(SplicePumpTest, HalfCloseFromClientLetsServerKeepSending) {
  // The client sends a little and half-closes at once (like a 3.21+ peer at test end); the
  // server sees EOF, then answers with more data, which must still arrive in full.
  Transfer upload;
  Transfer download;
  std::thread client_side([&] {
    sendAll(client_.get(), 4096, 3, upload.sent);
    receiveAll(client_.get(), download.received);
  });
  std::thread server_side([&] {
    receiveAll(server_.get(), upload.received);  // returns at the client's EOF
    sendAll(server_.get(), 64ULL << 20, 4, download.sent);
  });
  loop_.run();
  client_side.join();
  server_side.join();
  EXPECT_EQ(completion_.outcome, SplicePump::Outcome::Closed);
  EXPECT_EQ(upload.received.value, upload.sent.value);
  EXPECT_EQ(upload.received.bytes, 4096U);
  EXPECT_EQ(download.received.value, download.sent.value);
  EXPECT_EQ(download.received.bytes, 64ULL << 20);
}

TEST_F(SplicePumpTest, ResetFromOnePeerEndsThePumpWithAnError) {
  // iperf3's server closes its data sockets with unread data at TEST_END: a reset.
  std::thread client_side([&] {
    std::vector<std::uint8_t> buffer(1 << 20, 7);
    for (int i = 0; i < 8; ++i) {
      if (::send(client_.get(), buffer.data(), buffer.size(), MSG_NOSIGNAL) <= 0) {
        break;
      }
    }
  });
  linger reset_on_close{1, 0};
  ASSERT_EQ(
      ::setsockopt(server_.get(), SOL_SOCKET, SO_LINGER, &reset_on_close, sizeof(reset_on_close)),
      0);
  server_.reset();
  loop_.run();
  // Closing the proxy's side unblocks the writer with an error of its own.
  pump_.reset();
  proxy_client_side_.reset();
  client_side.join();
  ASSERT_TRUE(done_);
  EXPECT_EQ(completion_.outcome, SplicePump::Outcome::Error);
  EXPECT_FALSE(completion_.at_first);
}

// Issue 9: the drain at TEST_END starts once per pump. A later call neither restarts it (new
// ticks, a new quiet period) nor is ever called back.
TEST_F(SplicePumpTest, DrainsOnlyOnce) {
  const std::vector<std::uint8_t> data(64 * 1024, 'x');
  ASSERT_EQ(::send(client_.get(), data.data(), data.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(data.size()));
  int first = 0;
  int later = 0;
  pump_->drainFirstToSecond([&] {
    ++first;
    loop_.stop();
  });
  pump_->drainFirstToSecond([&] { ++later; });
  ev::Timer deadline(loop_, [this] {
    ADD_FAILURE() << "the drain did not end";
    loop_.stop();
  });
  deadline.armMs(10'000);
  loop_.run();
  EXPECT_EQ(first, 1);
  EXPECT_FALSE(pump_->draining());
  pump_->drainFirstToSecond([&] { ++later; });
  EXPECT_FALSE(pump_->draining());
  EXPECT_EQ(later, 0);
  EXPECT_EQ(pump_->bytesFirstToSecond(), data.size());
}

// When the session stops waiting (its drain deadline), the pump's drain ticks stop with it and
// its callback is dropped.
TEST_F(SplicePumpTest, AStoppedDrainTicksNoMore) {
  bool called = false;
  pump_->drainFirstToSecond([&] { called = true; });
  ASSERT_TRUE(pump_->draining());  // a few quiet ticks are needed before it ends by itself
  pump_->stopDrain();
  EXPECT_FALSE(pump_->draining());
  // Long enough for an unstopped drain to have ended (DrainsOnlyOnce) several times over.
  ev::Timer later(loop_, [this] { loop_.stop(); });
  later.armMs(100);
  loop_.run();
  EXPECT_FALSE(called);
  EXPECT_FALSE(pump_->draining());
  EXPECT_FALSE(done_);
}

// Waits (bounded) until everything written on `fd` has been acknowledged by its peer's TCP.
bool waitAcknowledged(int fd) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int unacknowledged = -1;
    if (::ioctl(fd, SIOCOUTQ, &unacknowledged) == 0 && unacknowledged == 0) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// Closes `fd` abortively: a reset instead of a FIN, as iperf3's server closes a data socket
// that still holds unread bytes.
void resetAndClose(UniqueFd& fd) {
  linger reset_on_close{1, 0};
  ASSERT_EQ(::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &reset_on_close, sizeof(reset_on_close)),
            0);
  fd.reset();
}

// A small send buffer toward the server: the pump's pipe fills and holds bytes the server has
// not taken yet.
void narrowServerPath(int proxy_server_side) {
  const int small = 4096;
  ASSERT_EQ(::setsockopt(proxy_server_side, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
}

// Issue 9: bytes the client sent before resetting its connection still reach the server, as
// they would directly (the kernel keeps data received before a reset readable), and only then
// does the pump report the client's error. Before the fix, the pipe's content was dropped.
TEST_F(SplicePumpTest, BytesSentBeforeAResetStillReachTheOpenSide) {
  narrowServerPath(proxy_server_side_.get());
  constexpr std::uint64_t kBytes = 256 * 1024;
  Transfer upload;
  std::atomic<bool> reset_done{false};
  std::thread client_side([&] {
    sendBytes(client_.get(), kBytes, 5, upload.sent);
    ASSERT_TRUE(waitAcknowledged(client_.get()));  // everything is in the proxy's hands
    resetAndClose(client_);
    reset_done = true;
  });
  std::thread server_side([&] {
    while (!reset_done) {  // the server reads only once the client is gone
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    receiveAll(server_.get(), upload.received);
  });
  ev::Timer deadline(loop_, [this] {
    ADD_FAILURE() << "no completion";
    loop_.stop();
  });
  deadline.armMs(20'000);
  loop_.run();
  EXPECT_TRUE(done_);
  EXPECT_EQ(completion_.outcome, SplicePump::Outcome::Error);
  EXPECT_TRUE(completion_.at_first);
  client_side.join();
  // Without the fix the server would wait for an EOF that never comes: close the proxy's side.
  pump_.reset();
  proxy_server_side_.reset();
  server_side.join();
  EXPECT_EQ(upload.received.bytes, kBytes);
  EXPECT_EQ(upload.received.value, upload.sent.value);
}

// The same when the reset is noticed first by a write toward the reset side (the server was
// sending to a client that never read): the client's bytes still reach the server.
TEST_F(SplicePumpTest, BytesSentBeforeAResetReachTheOpenSideWhenAWriteNoticesTheReset) {
  narrowServerPath(proxy_server_side_.get());
  constexpr std::uint64_t kBytes = 256 * 1024;
  Transfer upload;
  std::atomic<bool> reset_done{false};
  std::thread server_sender([&] {
    const std::vector<std::uint8_t> block(64 * 1024, 9);
    while (::send(server_.get(), block.data(), block.size(), MSG_NOSIGNAL) > 0) {
    }  // until the proxy closes its side
  });
  std::thread client_side([&] {
    sendBytes(client_.get(), kBytes, 6, upload.sent);
    ASSERT_TRUE(waitAcknowledged(client_.get()));
    resetAndClose(client_);
    reset_done = true;
  });
  std::thread server_reader([&] {
    while (!reset_done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    receiveAll(server_.get(), upload.received);
  });
  ev::Timer deadline(loop_, [this] {
    ADD_FAILURE() << "no completion";
    loop_.stop();
  });
  deadline.armMs(20'000);
  loop_.run();
  client_side.join();
  EXPECT_TRUE(done_);
  EXPECT_EQ(completion_.outcome, SplicePump::Outcome::Error);
  EXPECT_TRUE(completion_.at_first);
  // The server reads to the pump's half-close before the proxy's side is closed: that side holds
  // unread bytes from the server, so closing it sends a reset, which drops whatever of the
  // client's bytes the kernel has not yet delivered. (The shutdown is the pump's own, repeated so
  // that a pump that failed to pass it on makes the count below fail instead of hanging here.)
  (void)::shutdown(proxy_server_side_.get(), SHUT_WR);
  server_reader.join();
  pump_.reset();
  proxy_server_side_.reset();
  server_sender.join();
  EXPECT_EQ(upload.received.bytes, kBytes);
  EXPECT_EQ(upload.received.value, upload.sent.value);
}

}  // namespace
}  // namespace iperf3proxy::proxy
