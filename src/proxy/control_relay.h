#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ev/io_event.h"
#include "net/unique_fd.h"
#include "proto/control_codec.h"
#include "proxy/settings.h"

namespace iperf3proxy::proxy {

// What the control relay tells its session.
class ControlRelayCallbacks {
 public:
  virtual ~ControlRelayCallbacks() = default;
  // A decoded message. Called *before* the bytes that carried it are forwarded, so the session's
  // reaction (e.g. getting ready for data connections on CREATE_STREAMS) is in place before the
  // peer can react to the message.
  virtual void onControlEvent(const proto::ControlEvent& event) = 0;
  virtual void onControlProtocolError(const proto::CodecFailure& failure) = 0;
  // A socket error or reset on one leg.
  virtual void onControlError(proto::Side side, int error) = 0;
  // Both directions reached EOF and everything was delivered.
  virtual void onControlFinished() = 0;
};

// Relays one iperf3 control connection byte for byte between the client and the server, while
// the pure ControlCodec decodes both directions. Only bytes the codec accepted are forwarded.
// EOF in one direction is passed on as shutdown(SHUT_WR) once that direction's queue is flushed
// (iperf3 3.21+ half-closes and waits for EOF at the end of a test).
class ControlRelay {
 public:
  ControlRelay(ev::EventLoop& loop,
               net::UniqueFd client,
               net::UniqueFd server,
               proto::CodecLimits limits,
               ControlRelayCallbacks& callbacks);  // callbacks outlive the relay
  ControlRelay(const ControlRelay&) = delete;
  ControlRelay& operator=(const ControlRelay&) = delete;

  // Feeds the cookie the listener already read from the client, then starts relaying.
  void start(std::span<const std::uint8_t> cookie);

  // Starts relaying a control connection whose first exchange already happened on the server's
  // side (see BackendLink): the client's cookie went to the server, and `answer` is what the
  // server said first. The codec sees both; the client gets the answer.
  void startAnswered(std::span<const std::uint8_t> cookie, std::span<const std::uint8_t> answer);

  // Stops all I/O; the sockets stay open until the relay is destroyed.
  void stop();

  // Holds back everything from the client to the server (already decoded bytes included) until
  // release: the session uses it to let test data overtake nothing at TEST_END. The codec lets
  // a client add nothing but IPERF_DONE and CLIENT_TERMINATE to its TEST_END by then, so a held
  // queue above kMaxHeldBytes is a client the codec did not stop: the relay stops and calls
  // `overflow` (the session ends the test) instead of growing.
  static constexpr std::size_t kMaxHeldBytes = fixed::kControlHeldBytes;
  using HeldOverflow = std::function<void(std::size_t held)>;
  void holdClientToServer(HeldOverflow overflow);
  void releaseClientToServer();

  // The same for everything from the server to the client: the session holds a UDP test's
  // CREATE_STREAMS until it is the test's turn to set up UDP streams (pool/udp_setup_turns.h).
  // If the server closes meanwhile, the relay finishes without passing on what it held.
  void holdServerToClient();
  void releaseServerToClient();

  // Rewrites the server's results JSON before the client sees it: the relay holds that message
  // back until it is complete, asks `translate` for a replacement (nullopt: forward the
  // original), and forwards the replacement in its place. Set before EXCHANGE_RESULTS.
  using ResultsTranslator = std::function<std::optional<std::string>(std::string_view json)>;
  void translateServerResults(ResultsTranslator translate);

  // Gives the client's socket back (the relay must be stopped): used to reconnect the backend
  // when it closed before sending anything.
  net::UniqueFd releaseClient();

  // Writes bytes of the proxy's own to the client (e.g. a SERVER_ERROR), best effort and
  // immediately: used right before the session closes.
  void sendToClientNow(std::span<const std::uint8_t> bytes);

  std::uint64_t bytesFromClient() const { return from_client_.bytes; }

  std::uint64_t bytesFromServer() const { return from_server_.bytes; }

  int clientFd() const { return client_.get(); }

  int serverFd() const { return server_.get(); }

 private:
  struct Direction {
    proto::Side side;  // who writes into `from`
    int from = -1;
    int to = -1;
    std::vector<std::uint8_t> queue;  // decoded bytes waiting for `to` to take them
    std::size_t queue_head = 0;
    std::uint64_t bytes = 0;
    bool eof = false;
    bool shut = false;
    std::unique_ptr<ev::IoEvent> readable;
    std::unique_ptr<ev::IoEvent> writable;
  };

  void onReadable(Direction& d);
  void onWritable(Direction& d);
  // Returns false if the relay stopped while handling the bytes.
  bool decodeAndQueue(Direction& d, std::span<const std::uint8_t> bytes);
  void flush(Direction& d);
  // How much of the queue may be sent now: all of it, except a server results message that is
  // still being captured for translation.
  std::size_t sendableEnd(const Direction& d) const;
  void replaceServerResults(const proto::ResultsReceived& results);
  void maybeFinish();

  ev::EventLoop& loop_;
  ControlRelayCallbacks& callbacks_;
  net::UniqueFd client_;
  net::UniqueFd server_;
  proto::ControlCodec codec_;
  bool stopped_ = false;
  bool finished_ = false;
  bool client_to_server_held_ = false;
  bool server_to_client_held_ = false;
  HeldOverflow held_overflow_;
  ResultsTranslator translate_results_;
  Direction from_client_;
  Direction from_server_;
};

}  // namespace iperf3proxy::proxy
