// Component test: the control relay between two real TCP connections on loopback, driven by a
// real event loop. A scripted client and server run in one thread with blocking sockets and play
// the end of a test: EXCHANGE_RESULTS, both results messages, DISPLAY_RESULTS, IPERF_DONE.

#include "proxy/control_relay.h"

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ev/event_loop.h"
#include "ev/io_event.h"
#include "loopback.h"
#include "proto/wire.h"

namespace iperf3proxy::proxy {
namespace {

using net::UniqueFd;
using Bytes = std::vector<std::uint8_t>;

constexpr std::string_view kCookie = "abcdefghijklmnopqrstuvwxyz234567abcd";

Bytes cookieBytes() {
  Bytes bytes(kCookie.begin(), kCookie.end());
  bytes.push_back(0);
  return bytes;
}

Bytes state(proto::State s) {
  return {proto::stateToWire(s)};
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes all;
  for (const Bytes& part : parts) {
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
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
      EXPECT_EQ(receiveExactly(server_.get(), proto::kCookieSize), cookieBytes());
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
  EXPECT_EQ(relay_->bytesFromServer(), 1 + server_message.size() + 1);
}

TEST_F(ControlRelayTest, ATranslatorThatDeclinesLeavesTheServersBytes) {
  relay_->translateServerResults([](std::string_view) { return std::nullopt; });
  const Bytes server_message = proto::encodeJsonMessage(kServerResults);
  const Bytes received = playTestEnd({server_message, state(proto::State::DisplayResults)});
  EXPECT_EQ(received, concat({server_message, state(proto::State::DisplayResults)}));
  EXPECT_EQ(server_results_captured_, kServerResults);
}

}  // namespace
}  // namespace iperf3proxy::proxy
