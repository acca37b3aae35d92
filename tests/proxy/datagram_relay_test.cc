// Component test: DatagramRelay between real UDP sockets on loopback, driven by a real event loop.
// What it must keep: every datagram whole, in order, never merged or split, whatever the batching
// (recvmmsg, GRO in, GSO out) does underneath.

#include "proxy/datagram_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "ev/poll_ticker.h"
#include "net/address.h"
#include "net/datagram_batch.h"
#include "net/unique_fd.h"

namespace iperf3proxy::proxy {
namespace {

using net::UniqueFd;

UniqueFd udpSocket() {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  return fd;
}

net::Address localOf(int fd) {
  net::Address address;
  address.length = sizeof(address.storage);
  EXPECT_EQ(::getsockname(fd, address.sockaddrPtr(), &address.length), 0);
  return address;
}

void connectTo(int fd, int peer) {
  const net::Address address = localOf(peer);
  ASSERT_EQ(::connect(fd, address.sockaddrPtr(), address.length), 0);
}

// Datagram `index` of a test: its size, and bytes that name it, so a merge, split or reorder
// shows.
std::vector<std::uint8_t> datagramFor(std::uint32_t index, std::size_t size) {
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<std::uint8_t>((index * 131 + i) & 0xff);
  }
  if (size >= 4) {
    std::memcpy(bytes.data(), &index, 4);
  }
  return bytes;
}

// client -> [relay_in | relay_out] -> server: the relay reads relay_in (connected to the client)
// and writes relay_out (connected to the server).
class DatagramRelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    client_ = udpSocket();
    relay_in_ = udpSocket();
    relay_out_ = udpSocket();
    server_ = udpSocket();
    connectTo(client_.get(), relay_in_.get());
    connectTo(relay_in_.get(), client_.get());
    connectTo(relay_out_.get(), server_.get());
    const int big = 8 << 20;
    for (int fd : {relay_in_.get(), server_.get()}) {
      (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
    }
  }

  // Runs the loop until the server has received `count` datagrams (or 5 s have passed), reading
  // them every millisecond.
  std::vector<std::vector<std::uint8_t>> receiveAtServer(std::size_t count) {
    std::vector<std::vector<std::uint8_t>> received;
    std::vector<std::uint8_t> buffer(65536);
    int ticks = 0;
    std::function<void()> tick;
    ev::Timer ticker(loop_, [&] { tick(); });
    tick = [&] {
      for (;;) {
        const ssize_t n = ::recv(server_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n < 0) {
          break;
        }
        received.emplace_back(buffer.begin(), buffer.begin() + n);
      }
      if (received.size() >= count || ++ticks > 5000) {
        loop_.stop();
        return;
      }
      ticker.armMs(1);
    };
    ticker.armMs(1);
    loop_.run();
    return received;
  }

  // Runs the loop in steps about a millisecond apart (1 to 5 ms on a loaded machine), calling
  // `step` with each step's number until it returns true or 1500 steps have passed.
  void runSteps(const std::function<bool(int)>& step) {
    int steps = 0;
    std::function<void()> next;
    ev::Timer timer(loop_, [&] { next(); });
    next = [&] {
      if (step(++steps) || steps >= 1500) {
        loop_.stop();
        return;
      }
      timer.armMs(1);
    };
    timer.armMs(1);
    loop_.run();
  }

  // Sends `count` datagrams of `size` bytes from the client, numbered on from those in `sent`.
  void sendFromClient(int count, std::size_t size, std::vector<std::vector<std::uint8_t>>& sent) {
    for (int i = 0; i < count; ++i) {
      sent.push_back(datagramFor(static_cast<std::uint32_t>(sent.size()), size));
      EXPECT_EQ(::send(client_.get(), sent.back().data(), size, 0), static_cast<ssize_t>(size));
    }
  }

  // Appends what the server's socket holds now.
  void receiveAll(std::vector<std::vector<std::uint8_t>>& received) {
    std::vector<std::uint8_t> buffer(65536);
    for (;;) {
      const ssize_t n = ::recv(server_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
      if (n < 0) {
        return;
      }
      received.emplace_back(buffer.begin(), buffer.begin() + n);
    }
  }

  struct SteadyFlow {
    std::vector<std::vector<std::uint8_t>> sent;
    std::vector<std::vector<std::uint8_t>> received;
    bool polled = false;          // the relay read on the tick at some point
    bool polling_at_end = false;  // and still did once every datagram had arrived
    std::size_t tick_listeners_at_end = 0;
    std::uint64_t dropped = 0;
    bool lone_datagram_arrived = false;  // one more datagram, sent after the flow went quiet
  };

  // Relays a steady flow: `per_ms` datagrams of `size` bytes a millisecond for 60 ms, through a
  // relay on a tick of `interval`; then runs until every datagram arrived and the relay is on
  // readiness (or 1500 steps); then sends one lone datagram more. The rate is kept by the clock,
  // not by the steps, so a loaded machine that runs the steps late sends the same rate in
  // larger bursts (the relay judges its rate over 10 ms or more).
  SteadyFlow relaySteadyFlow(std::chrono::microseconds interval, int per_ms, std::size_t size) {
    auto ticker = std::make_shared<ev::PollTicker>(loop_, interval);
    EXPECT_TRUE(ticker->available());
    const LoopDatagramIo io{batch_, ticker, nullptr};
    DatagramRelay relay(loop_, io, relay_in_.get(), relay_out_.get(), nullptr);
    relay.start();
    SteadyFlow flow;
    constexpr double kSendingMs = 60;
    const auto start = std::chrono::steady_clock::now();
    runSteps([&](int) {
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
      const auto due = static_cast<std::size_t>(per_ms * std::min(ms, kSendingMs));
      sendFromClient(static_cast<int>(due - std::min(due, flow.sent.size())), size, flow.sent);
      flow.polled = flow.polled || relay.polling();
      receiveAll(flow.received);
      return ms > kSendingMs && !relay.polling() && flow.received.size() == flow.sent.size();
    });
    flow.polling_at_end = relay.polling();
    flow.tick_listeners_at_end = ticker->listeners();
    flow.dropped = relay.dropped();
    std::vector<std::vector<std::uint8_t>> lone;
    sendFromClient(1, size, lone);
    const auto last = receiveAtServer(1);
    flow.lone_datagram_arrived = last.size() == 1 && last[0] == lone[0];
    return flow;
  }

  ev::EventLoop loop_;
  net::DatagramBatch batch_;
  LoopDatagramIo io_{batch_, nullptr, nullptr};  // always on readiness
  UniqueFd client_;
  UniqueFd relay_in_;
  UniqueFd relay_out_;
  UniqueFd server_;
};

TEST_F(DatagramRelayTest, EveryDatagramArrivesWholeAndInOrder) {
  net::enableUdpGro(relay_in_.get());
  DatagramRelay relay(loop_, io_, relay_in_.get(), relay_out_.get(), nullptr);
  relay.start();
  // Runs of one size (GSO sends), sizes that change, a shorter one inside a run, an empty one,
  // and one too large to share a GSO send with anything.
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 300; ++i) {
    sizes.push_back(1400);
  }
  for (std::size_t size : std::initializer_list<std::size_t>{100, 100, 99, 1400, 0, 1400, 1400,
                                                             60000, 1400, 1, 8000, 8000, 7999}) {
    sizes.push_back(size);
  }
  for (int i = 0; i < 100; ++i) {
    sizes.push_back(32768);
  }
  std::vector<std::vector<std::uint8_t>> sent;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    sent.push_back(datagramFor(static_cast<std::uint32_t>(i), sizes[i]));
    ASSERT_EQ(::send(client_.get(), sent.back().data(), sent.back().size(), 0),
              static_cast<ssize_t>(sent.back().size()));
  }
  const auto received = receiveAtServer(sent.size());
  ASSERT_EQ(received.size(), sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    ASSERT_EQ(received[i], sent[i]) << "datagram " << i;
  }
  EXPECT_EQ(relay.datagrams(), sent.size());
  EXPECT_EQ(relay.dropped(), 0U);
}

// A GSO send into a socket with GRO arrives as one receive of many datagrams: the relay cuts it
// back into exactly the datagrams the sender wrote (the server's socket has no GRO, so a merge
// would show as one long datagram).
TEST_F(DatagramRelayTest, ACoalescedReceiveIsSplitBackIntoItsDatagrams) {
  net::enableUdpGro(relay_in_.get());
  DatagramRelay relay(loop_, io_, relay_in_.get(), relay_out_.get(), nullptr);
  relay.start();
  constexpr std::uint16_t kSize = 1200;
  constexpr int kCount = 40;  // the last one shorter
  std::vector<std::vector<std::uint8_t>> sent;
  std::vector<std::uint8_t> super;
  for (int i = 0; i < kCount; ++i) {
    sent.push_back(datagramFor(static_cast<std::uint32_t>(i), i + 1 == kCount ? 700U : kSize));
    super.insert(super.end(), sent.back().begin(), sent.back().end());
  }
  iovec iov{super.data(), super.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(std::uint16_t))] = {};
  msghdr header{};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof(control);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&header);
  cmsg->cmsg_level = SOL_UDP;
  cmsg->cmsg_type = UDP_SEGMENT;
  cmsg->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
  std::memcpy(CMSG_DATA(cmsg), &kSize, sizeof(kSize));
  if (::sendmsg(client_.get(), &header, 0) != static_cast<ssize_t>(super.size())) {
    GTEST_SKIP() << "no UDP GSO on this kernel";
  }
  const auto received = receiveAtServer(sent.size());
  ASSERT_EQ(received.size(), sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    ASSERT_EQ(received[i], sent[i]) << "datagram " << i;
  }
}

// Only the expected source's datagrams pass; the comparison needs no formatting.
TEST_F(DatagramRelayTest, DatagramsFromAnotherSourceAreDropped) {
  // A socket that was never connected (as the proxy's client socket before its connect()):
  // both the client and a stranger reach it. (Disconnecting relay_in_ would not do: a socket bound
  // to port 0 loses its port on disconnect.)
  UniqueFd open_in = udpSocket();
  connectTo(client_.get(), open_in.get());
  UniqueFd stranger = udpSocket();
  connectTo(stranger.get(), open_in.get());
  const net::Address expected = localOf(client_.get());
  DatagramRelay relay(loop_, io_, open_in.get(), relay_out_.get(), &expected);
  relay.start();
  std::vector<std::vector<std::uint8_t>> sent;
  for (std::uint32_t i = 0; i < 20; ++i) {
    const auto bytes = datagramFor(i, 500);
    const int from = i % 2 == 0 ? client_.get() : stranger.get();
    ASSERT_EQ(::send(from, bytes.data(), bytes.size(), 0), 500);
    if (from == client_.get()) {
      sent.push_back(bytes);
    }
  }
  const auto received = receiveAtServer(sent.size());
  ASSERT_EQ(received, sent);
  EXPECT_EQ(relay.dropped(), 10U);
}

// With a place for strays (the proxy's front), another source's datagrams are handed there whole,
// with their source, and count as neither relayed nor dropped.
TEST_F(DatagramRelayTest, DatagramsFromAnotherSourceGoToTheStrayHandler) {
  UniqueFd open_in = udpSocket();
  connectTo(client_.get(), open_in.get());
  UniqueFd stranger = udpSocket();
  connectTo(stranger.get(), open_in.get());
  const net::Address expected = localOf(client_.get());
  const net::Address stranger_address = localOf(stranger.get());
  std::vector<std::vector<std::uint8_t>> strays;
  DatagramRelay relay(loop_, io_, open_in.get(), relay_out_.get(), &expected,
                      DatagramRelay::kPauseMs,
                      [&](const net::Address& source, std::span<const std::uint8_t> datagram) {
                        EXPECT_EQ(source.toString(), stranger_address.toString());
                        strays.emplace_back(datagram.begin(), datagram.end());
                      });
  relay.start();
  std::vector<std::vector<std::uint8_t>> sent;
  std::vector<std::vector<std::uint8_t>> sent_by_stranger;
  for (std::uint32_t i = 0; i < 20; ++i) {
    const auto bytes = datagramFor(i, 300 + i);
    const int from = i % 3 == 0 ? stranger.get() : client_.get();
    ASSERT_EQ(::send(from, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    (from == client_.get() ? sent : sent_by_stranger).push_back(bytes);
  }
  const auto received = receiveAtServer(sent.size());
  ASSERT_EQ(received, sent);
  EXPECT_EQ(strays, sent_by_stranger);
  EXPECT_EQ(relay.dropped(), 0U);
}

// A destination whose buffer is full: the relay holds what it could not send and stops reading
// the source, whose receive buffer takes the burst; once the destination drains, every datagram
// arrives, in order, none dropped. (A Unix datagram socket pair as the destination: unlike UDP on
// loopback, which frees the sender's buffer at once, its sender's buffer stays full until the
// peer reads. Every datagram has its own size, so no GSO send forms, which a Unix socket would
// not cut back.)
class DatagramRelayPauseTest : public DatagramRelayTest {
 protected:
  void SetUp() override {
    DatagramRelayTest::SetUp();
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, pair), 0);
    full_out_ = UniqueFd(pair[0]);
    reader_ = UniqueFd(pair[1]);
    const int small = 16 << 10;
    (void)::setsockopt(full_out_.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  }

  // Sends datagrams 0..count-1 of sizes 100, 101, ... from the client.
  std::vector<std::vector<std::uint8_t>> sendGrowing(std::uint32_t count) {
    std::vector<std::vector<std::uint8_t>> sent;
    for (std::uint32_t i = 0; i < count; ++i) {
      sent.push_back(datagramFor(i, 100 + i));
      EXPECT_EQ(::send(client_.get(), sent.back().data(), sent.back().size(), 0),
                static_cast<ssize_t>(sent.back().size()));
    }
    return sent;
  }

  // Runs the loop, ticking every millisecond: reads nothing at the reader until `start_reading`
  // says so, then everything; stops when `done` says so (given how many arrived) or after 5000
  // ticks.
  std::vector<std::vector<std::uint8_t>> drainWhen(const std::function<bool()>& start_reading,
                                                   const std::function<bool(std::size_t)>& done) {
    std::vector<std::vector<std::uint8_t>> received;
    std::vector<std::uint8_t> buffer(65536);
    bool reading = false;
    int ticks = 0;
    std::function<void()> tick;
    ev::Timer ticker(loop_, [&] { tick(); });
    tick = [&] {
      reading = reading || start_reading();
      while (reading) {
        const ssize_t n = ::recv(reader_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n < 0) {
          break;
        }
        received.emplace_back(buffer.begin(), buffer.begin() + n);
      }
      if (done(received.size()) || ++ticks > 5000) {
        loop_.stop();
        return;
      }
      ticker.armMs(1);
    };
    ticker.armMs(1);
    loop_.run();
    return received;
  }

  UniqueFd full_out_;
  UniqueFd reader_;
};

// Receive coalescing: a flow fast enough to give each tick several datagrams is read on the tick;
// once it goes quiet it is read on readiness again, so a lone datagram later is not held for a
// tick. Every datagram arrives whole and in order throughout.
TEST_F(DatagramRelayTest, ABusyFlowIsReadOnTheTickAndAQuietOneOnReadiness) {
  // 10 datagrams (10 KB) per 500 us tick: above DatagramRelay::kPollFromPerTick, below the caps.
  const SteadyFlow flow = relaySteadyFlow(std::chrono::microseconds{500}, 20, 1000);
  EXPECT_TRUE(flow.polled);
  EXPECT_FALSE(flow.polling_at_end);
  EXPECT_EQ(flow.tick_listeners_at_end, 0U);
  ASSERT_EQ(flow.received.size(), flow.sent.size());
  for (std::size_t i = 0; i < flow.sent.size(); ++i) {
    ASSERT_EQ(flow.received[i], flow.sent[i]) << "datagram " << i;
  }
  EXPECT_EQ(flow.dropped, 0U);
  EXPECT_TRUE(flow.lone_datagram_arrived);
}

// The rule itself (the rate a relay measures depends on how the machine schedules it, so the
// band is checked here, directly): a tick is for flows of a few datagrams per tick, never for one
// so fast that a tick's burst could overflow the destination's receive buffer.
TEST(DatagramRelayPollRule, PollsOnlyInsideTheBandAndLeavesBelowIt) {
  constexpr double kMtu = 1400;
  // Readiness: polling starts at kPollFromPerTick datagrams per tick.
  EXPECT_FALSE(DatagramRelay::shouldPoll(false, 1, kMtu));
  EXPECT_FALSE(DatagramRelay::shouldPoll(false, 3.9, 3.9 * kMtu));
  EXPECT_TRUE(DatagramRelay::shouldPoll(false, 4, 4 * kMtu));
  EXPECT_TRUE(DatagramRelay::shouldPoll(false, 40, 40 * kMtu));
  // Polling: it goes on down to kEventsBelowPerTick (so a rate near the line does not flap).
  EXPECT_TRUE(DatagramRelay::shouldPoll(true, 3, 3 * kMtu));
  EXPECT_TRUE(DatagramRelay::shouldPoll(true, 1, kMtu));
  EXPECT_FALSE(DatagramRelay::shouldPoll(true, 0.9, 0.9 * kMtu));
  EXPECT_FALSE(DatagramRelay::shouldPoll(true, 0, 0));
  // Above one GSO send per tick, in bytes or in datagrams, never (either way).
  for (bool polling : {false, true}) {
    EXPECT_FALSE(DatagramRelay::shouldPoll(polling, 10, 10 * 8000));
    EXPECT_FALSE(DatagramRelay::shouldPoll(polling, 200, 200 * 16));
    EXPECT_TRUE(DatagramRelay::shouldPoll(polling, 64, 64 * 1000));
  }
}

TEST_F(DatagramRelayPauseTest, AFullDestinationPausesTheSourceInsteadOfDropping) {
  // A pause long enough that only a hung machine would end it.
  DatagramRelay relay(loop_, io_, relay_in_.get(), full_out_.get(), nullptr, 60'000);
  relay.start();
  const auto sent = sendGrowing(1000);
  bool was_paused = false;
  const auto received = drainWhen(
      [&] {
        was_paused = was_paused || relay.paused();
        return was_paused;
      },
      [&](std::size_t arrived) { return arrived == sent.size(); });
  EXPECT_TRUE(was_paused);
  ASSERT_EQ(received.size(), sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    ASSERT_EQ(received[i], sent[i]) << "datagram " << i;
  }
  EXPECT_EQ(relay.dropped(), 0U);
  EXPECT_FALSE(relay.paused());
}

// A destination that stays full past the pause: what was held is dropped (as a full buffer drops
// UDP) and the relay reads on; what arrives after is in order.
TEST_F(DatagramRelayPauseTest, ADestinationFullPastThePauseCostsWhatWasHeld) {
  DatagramRelay relay(loop_, io_, relay_in_.get(), full_out_.get(), nullptr, 5);
  relay.start();
  const auto sent = sendGrowing(1000);
  int paused_ticks = 0;
  const auto received = drainWhen(
      [&] {
        // Read only once the relay has dropped something (the pause ran out).
        paused_ticks += relay.paused() ? 1 : 0;
        return relay.dropped() > 0;
      },
      [&](std::size_t arrived) { return arrived + relay.dropped() == sent.size(); });
  EXPECT_GT(paused_ticks, 0);
  EXPECT_GT(relay.dropped(), 0U);
  EXPECT_EQ(received.size() + relay.dropped(), sent.size());
  // Whatever arrived did so whole and in the order it was sent.
  std::size_t next = 0;
  for (const auto& datagram : received) {
    while (next < sent.size() && sent[next] != datagram) {
      ++next;
    }
    ASSERT_LT(next, sent.size()) << "a datagram arrived changed or out of order";
    ++next;
  }
}

}  // namespace
}  // namespace iperf3proxy::proxy
