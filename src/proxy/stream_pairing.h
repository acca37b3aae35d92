#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/socket_ops.h"
#include "net/unique_fd.h"
#include "proto/cookie.h"
#include "proto/test_params.h"
#include "proxy/close_reason.h"
#include "proxy/stream_dialer.h"
#include "roles/role_resolver.h"

namespace iperf3proxy::proxy {

// Pairs the data connections of one TCP test: each client connection with a backend connection
// of the same role. It dials one backend connection per client connection (StreamDialer: the
// server's accept order is the dial order, so backend roles are certain), gathers the evidence
// for the client's roles (a role byte, read; or test data, only peeked at), feeds both sides to
// the pure RoleResolver and hands each pairing to the session the moment it is certain.
//
// A connection that closes (EOF) before it is paired is a normal end of a short test: it stays,
// its bytes and its EOF in the socket, until it is paired or the test ends.
class StreamPairing {
 public:
  struct Callbacks {
    // One pairing, both sockets ready to relay; nothing has been consumed but a role byte.
    std::function<void(roles::Flow flow, net::UniqueFd client, net::UniqueFd server)> on_paired;
    // Every data connection of the test has been paired (after the last on_paired).
    std::function<void()> on_all_paired;
    // The test cannot go on (an error on a connection not paired yet, no role byte, a dial
    // failed).
    std::function<void(CloseReason reason, std::string detail)> on_failed;
  };

  StreamPairing(ev::EventLoop& loop,
                const proto::TestParams& params,
                const net::Address& backend,
                const proto::Cookie& cookie,
                long backend_connect_ms,
                std::string log_prefix,
                Callbacks callbacks);
  ~StreamPairing();
  StreamPairing(const StreamPairing&) = delete;
  StreamPairing& operator=(const StreamPairing&) = delete;

  // A client data connection of this test; the session has checked that the test wants it.
  void addClientStream(net::UniqueFd fd, std::uint16_t source_port);

  // The role deadline: if every connection has arrived, pairs the rest by source-port order and
  // returns true; otherwise returns false and the session gives up on the test.
  bool settleByGuess();

  // No callback after this; sockets still pending close with the pairing.
  void stop();

  bool allPaired() const { return resolver_.allPaired(); }

  int clientStreams() const { return static_cast<int>(next_client_id_); }

  int serverStreams() const { return static_cast<int>(next_server_id_); }

  int repairedRoles() const { return resolver_.repairedRoles(); }

  int misorderedArrivals() const { return resolver_.misorderedArrivals(); }

  bool rolesGuessed() const { return roles_guessed_; }

  // The backend wrote on a connection it should receive on: its accept order was not the dial
  // order (never seen; logged and shown in the summary if it happens).
  bool backendRoleMismatch() const { return backend_role_mismatch_; }

 private:
  struct PendingStream {
    net::UniqueFd fd;
    std::uint16_t source_port = 0;
    std::unique_ptr<ev::IoEvent> watch;
  };

  using Streams = std::map<roles::StreamId, PendingStream>;

  void onRoleByteReadable(roles::StreamId id);
  void registerClientStream(roles::StreamId id, std::optional<roles::RoleByte> role_byte);
  void onClientStreamReadable(roles::StreamId id);
  void onServerStreamReady(net::UniqueFd fd);
  void onServerStreamReadable(roles::StreamId id);
  void watch(PendingStream& stream, std::function<void()> on_readable);
  PendingStream* find(Streams& streams, roles::StreamId id);
  // Whether test data waits on a watched connection (peeked, never consumed). EOF stops the
  // watch and is no evidence; an error fails the test, naming `who` (client or backend).
  bool peekedTestData(Streams& streams, roles::StreamId id, std::string_view who);
  void retireWatch(PendingStream& stream);
  void settle(const std::vector<roles::Pairing>& pairs);
  void fail(CloseReason reason, std::string detail);

  ev::EventLoop& loop_;
  std::string log_prefix_;
  Callbacks callbacks_;
  bool role_bytes_;
  bool bidirectional_;
  net::StreamSocketOptions options_;
  roles::RoleResolver resolver_;
  Streams client_streams_;
  Streams server_streams_;
  roles::StreamId next_client_id_ = 0;
  roles::StreamId next_server_id_ = 0;
  bool stopped_ = false;
  bool roles_guessed_ = false;
  bool backend_role_mismatch_ = false;
  StreamDialer dialer_;  // last: its callbacks use the members above
};

}  // namespace iperf3proxy::proxy
