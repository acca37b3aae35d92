// Component test: the control relay between two real TCP connections on loopback, driven by a
// real event loop. A scripted client and server run in one thread with blocking sockets and play
// a test up to TEST_END, then its end: EXCHANGE_RESULTS, both results messages,
// DISPLAY_RESULTS, IPERF_DONE.

#include "proxy/control_relay.h"

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "ev/io_event.h"
#include "loopback.h"
#include "proto/wire.h"
#include "scripted_peers.h"

namespace iperf3proxy::proxy {
namespace {

using net::UniqueFd;
using testing::Bytes;
using testing::concat;
using testing::state;

constexpr std::string_view kCookie = "abcdefghijklmnopqrstuvwxyz234567abcd";

Bytes cookieBytes() {
  Bytes bytes(kCookie.begin(), kCookie.end());
  bytes.push_back(0);
  return bytes;
}

void sendBytes(int fd, const Bytes& bytes) {
  ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

Bytes receiveExactly(int fd, std::size_t size) {
  Bytes bytes(size);
  std::size_t got = 0;
  while (got < size) {
    const ssize_t n = ::recv(fd, bytes.data() + got, size - got, 0);
    if (n <= 0) {
      ADD_FAILURE() << "connection ended after " << got << " of " << size << " bytes";
      bytes.resize(got);
      return bytes;
    }
    got += static_cast<std::size_t>(n);
  }
  return bytes;
}

const Bytes kParams = proto::encodeJsonMessage(R"({"tcp":true,"parallel":1,"time":1})");

// The scripted peers, from the cookie to the client's TEST_END reaching the server.
void playToTestEnd(int client, int server) {
  EXPECT_EQ(receiveExactly(server, proto::kCookieSize), cookieBytes());
  sendBytes(server, state(proto::State::ParamExchange));
  EXPECT_EQ(receiveExactly(client, 1), state(proto::State::ParamExchange));
  sendBytes(client, kParams);
  EXPECT_EQ(receiveExactly(server, kParams.size()), kParams);
  const Bytes running = concat({state(proto::State::CreateStreams), state(proto::State::TestStart),
                                state(proto::State::TestRunning)});
  sendBytes(server, running);
  EXPECT_EQ(receiveExactly(client, running.size()), running);
  sendBytes(client, state(proto::State::TestEnd));
  EXPECT_EQ(receiveExactly(server, 1), state(proto::State::TestEnd));
}

Bytes receiveUntilEof(int fd) {
  Bytes bytes;
  std::uint8_t buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) {
      return bytes;
    }
    bytes.insert(bytes.end(), buffer, buffer + n);
  }
}

class ControlRelayTest : public ::testing::Test, public ControlRelayCallbacks {
 protected:
  void SetUp() override {
    auto [client, proxy_client_side] = testing::tcpPair();
    auto [server, proxy_server_side] = testing::tcpPair();
    client_ = std::move(client);
    server_ = std::move(server);
    relay_ =
        std::make_unique<ControlRelay>(loop_, std::move(proxy_client_side),
                                       std::move(proxy_server_side), proto::CodecLimits{}, *this);
  }

  // Runs the end of a test through the relay. The server writes its results message and
  // DISPLAY_RESULTS in the pieces given; returns everything the client received after
  // EXCHANGE_RESULTS.
  Bytes playTestEnd(const std::vector<Bytes>& server_pieces) {
    const Bytes client_results = proto::encodeJsonMessage(R"({"from":"client"})");
    Bytes client_received;
    std::thread peers([&] {
      playToTestEnd(client_.get(), server_.get());
      sendBytes(server_.get(), state(proto::State::ExchangeResults));
      EXPECT_EQ(receiveExactly(client_.get(), 1), state(proto::State::ExchangeResults));
      sendBytes(client_.get(), client_results);
      EXPECT_EQ(receiveExactly(server_.get(), client_results.size()), client_results);
      for (const Bytes& piece : server_pieces) {
        sendBytes(server_.get(), piece);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      sendBytes(client_.get(), state(proto::State::IperfDone));
      ::shutdown(client_.get(), SHUT_WR);
      EXPECT_EQ(receiveUntilEof(server_.get()), state(proto::State::IperfDone));
      ::shutdown(server_.get(), SHUT_WR);
      client_received = receiveUntilEof(client_.get());
    });
    ev::Timer deadline(loop_, [this] {
      ADD_FAILURE() << "the relay did not finish";
      loop_.stop();
    });
    deadline.armMs(10'000);
    relay_->start(cookieBytes());
    loop_.run();
    peers.join();
    return client_received;
  }

  void onControlEvent(const proto::ControlEvent& event) override {
    if (on_event_) {
      on_event_(event);
    }
    if (const auto* results = std::get_if<proto::ResultsReceived>(&event)) {
      if (results->from == proto::Side::Server) {
        server_results_captured_ = results->json;
      }
    }
  }

  void onControlProtocolError(const proto::CodecFailure& failure) override {
    ADD_FAILURE() << "protocol error: " << failure.detail;
    loop_.stop();
  }

  void onControlError(proto::Side, int error) override {
    ADD_FAILURE() << "socket error " << error;
    loop_.stop();
  }

  void onControlFinished() override { loop_.stop(); }

  ev::EventLoop loop_;
  UniqueFd client_;
  UniqueFd server_;
  std::unique_ptr<ControlRelay> relay_;
  std::optional<std::string> server_results_captured_;
  std::function<void(const proto::ControlEvent&)> on_event_;
};

const std::string kServerResults = R"({"from":"server","server_output_text":"report"})";

TEST_F(ControlRelayTest, WithoutTranslationTheServerResultsPassUnchangedAndUncaptured) {
  const Bytes server_message = proto::encodeJsonMessage(kServerResults);
  const Bytes received =
      playTestEnd({concat({server_message, state(proto::State::DisplayResults)})});
  EXPECT_EQ(received, concat({server_message, state(proto::State::DisplayResults)}));
  EXPECT_FALSE(server_results_captured_.has_value());
}

TEST_F(ControlRelayTest, TranslatedResultsReplaceTheServersInPlaceWhateverTheSplit) {
  const std::string replacement = R"({"from":"server","server_output_text":"translated, longer"})";
  std::string seen;
  relay_->translateServerResults([&](std::string_view json) -> std::optional<std::string> {
    seen = std::string(json);
    return replacement;
  });
  const Bytes server_message = proto::encodeJsonMessage(kServerResults);
  // Split inside the length, inside the body, and with DISPLAY_RESULTS glued to the last piece:
  // nothing of the message may reach the client before all of it has arrived.
  const Bytes first(server_message.begin(), server_message.begin() + 2);
  const Bytes middle(server_message.begin() + 2, server_message.begin() + 20);
  const Bytes last = concat({Bytes(server_message.begin() + 20, server_message.end()),
                             state(proto::State::DisplayResults)});
  const Bytes received = playTestEnd({first, middle, last});
  EXPECT_EQ(seen, kServerResults);
  EXPECT_EQ(received,
            concat({proto::encodeJsonMessage(replacement), state(proto::State::DisplayResults)}));
  // PARAM_EXCHANGE .. TEST_RUNNING, EXCHANGE_RESULTS, the message, DISPLAY_RESULTS.
  EXPECT_EQ(relay_->bytesFromServer(), 5 + server_message.size() + 1);
}

TEST_F(ControlRelayTest, ATranslatorThatDeclinesLeavesTheServersBytes) {
  relay_->translateServerResults([](std::string_view) { return std::nullopt; });
  const Bytes server_message = proto::encodeJsonMessage(kServerResults);
  const Bytes received = playTestEnd({server_message, state(proto::State::DisplayResults)});
  EXPECT_EQ(received, concat({server_message, state(proto::State::DisplayResults)}));
  EXPECT_EQ(server_results_captured_, kServerResults);
}

// Issue 9: while TEST_END is held for the upload drain, the client's queue to the server does
// not grow past its cap. The codec leaves a client nothing to add to a held TEST_END but two
// state bytes, so the test holds earlier, where the client still owes its (large) params.
TEST(ControlRelayHoldTest, AHeldQueueAboveItsCapEndsTheRelayInsteadOfGrowing) {
  struct Callbacks : ControlRelayCallbacks {
    std::function<void(const proto::ControlEvent&)> on_event;

    void onControlEvent(const proto::ControlEvent& event) override { on_event(event); }

    void onControlProtocolError(const proto::CodecFailure& failure) override {
      ADD_FAILURE() << "protocol error: " << failure.detail;
    }

    void onControlError(proto::Side, int error) override { ADD_FAILURE() << "error " << error; }

    void onControlFinished() override { ADD_FAILURE() << "finished"; }
  } callbacks;

  ev::EventLoop loop;
  auto [client, proxy_client_side] = testing::tcpPair();
  auto [server, proxy_server_side] = testing::tcpPair();
  proto::CodecLimits limits;
  limits.max_params_json = 1 << 20;
  ControlRelay relay(loop, std::move(proxy_client_side), std::move(proxy_server_side), limits,
                     callbacks);
  std::optional<std::size_t> overflow_at;
  callbacks.on_event = [&](const proto::ControlEvent& event) {
    const auto* received = std::get_if<proto::StateReceived>(&event);
    if (received != nullptr && received->state == proto::State::ParamExchange) {
      relay.holdClientToServer([&](std::size_t held) {
        overflow_at = held;
        loop.stop();
      });
    }
  };
  const Bytes params = proto::encodeJsonMessage("{\"x\":\"" + std::string(200 * 1024, 'x') + "\"}");
  std::thread peers([&] {
    EXPECT_EQ(receiveExactly(server.get(), proto::kCookieSize), cookieBytes());
    sendBytes(server.get(), state(proto::State::ParamExchange));
    EXPECT_EQ(receiveExactly(client.get(), 1), state(proto::State::ParamExchange));
    // The relay stops reading at the cap: the rest may never be taken.
    (void)::send(client.get(), params.data(), params.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  });
  ev::Timer deadline(loop, [&] {
    ADD_FAILURE() << "no overflow";
    loop.stop();
  });
  deadline.armMs(10'000);
  relay.start(cookieBytes());
  loop.run();
  peers.join();
  ASSERT_TRUE(overflow_at.has_value());
  EXPECT_GT(*overflow_at, ControlRelay::kMaxHeldBytes);
  // Nothing of the held bytes reached the server.
  EXPECT_EQ(relay.bytesFromClient(), proto::kCookieSize + *overflow_at);
  std::uint8_t byte = 0;
  EXPECT_EQ(::recv(server.get(), &byte, 1, MSG_DONTWAIT), -1);
}

}  // namespace
}  // namespace iperf3proxy::proxy
