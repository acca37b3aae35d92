#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace iperf3proxy::roles {

// Identifies one data connection on one side of a test; chosen by the caller, unique per side.
using StreamId = std::uint32_t;

// Which way test data flows on a data connection.
enum class Flow : std::uint8_t {
  Upload,    // client sends, server receives
  Download,  // server sends, client receives
};

// The role-byte extension (docs/ROLE_BYTE.md): one byte after the cookie on every data
// connection of a client that announced it. Bit 7 set means Download; bits 0..6 are the index of
// the connection within its flow, in the client's creation order.
struct RoleByte {
  Flow flow;
  std::uint8_t index;  // 0..127
};

// Bits 0..6 of a role byte.
inline constexpr std::uint8_t kRoleByteIndexMask = 0x7f;

RoleByte decodeRoleByte(std::uint8_t byte);
std::uint8_t encodeRoleByte(RoleByte role);

// A client data connection joined to the backend connection of the same flow and rank.
struct Pairing {
  StreamId client;
  StreamId server;
  Flow flow;
  bool guessed;  // settled by the deadline fallback, not by evidence
};

// Works out the true role of every data connection of one test and pairs client connections
// with backend connections. Pure logic: no sockets, no clock.
//
// Server side: the iperf3 server gives the first `uploads` connections it accepts the receiving
// role and the rest the sending role (docs/PROTOCOL.md §3.5). The proxy dials the backend one
// connection at a time and waits until each is in the server's accept queue, so the order of
// addServerStream() calls *is* the server's accept order, and server roles are certain.
//
// Client side: the proxy's own accept order is as unreliable as the server's would be, so client
// roles come, in this order of trust, from a role byte, from what the client does (a client sender
// carries test data as soon as the test runs, a client receiver never writes), from counting (once
// every sender is known, the rest receive), and only as a deadline fallback from source-port order.
//
// Within a flow, a connection's rank (which of the server's connections of that flow it joins, so
// that stream ids and per-stream results line up) comes from its role-byte index, else from its
// place in the client's creation order as source ports show it (senders were created first).
//
// Each connection is paired on its own, the moment its flow is certain and its rank and the
// server's connection of that rank are known; it does not wait for the rest of its flow (a short
// test may end before the rest shows its role). A pairing is released only once it is certain;
// the caller must not forward a byte on a connection before it has been paired.
class RoleResolver {
 public:
  RoleResolver(int upload_streams, int download_streams);

  // A client data connection, in the order the proxy accepted it.
  void addClientStream(StreamId id,
                       std::uint16_t source_port,
                       std::optional<RoleByte> role_byte = std::nullopt);

  // A backend connection, in the order the server accepted it.
  void addServerStream(StreamId id);

  // Test data arrived from the client on this connection: it is a client sender.
  void clientSentData(StreamId id);

  // Test data arrived from the server on this connection. Returns false when that contradicts
  // the role its accept position implies (the server is not doing what the proxy expects).
  bool serverSentData(StreamId id);

  // Pairings that have become certain since the last call (each pairing is returned once).
  std::vector<Pairing> takeSettled();

  // Deadline fallback: settles every remaining client connection by best guess (creation order
  // from source ports: senders first) and returns the new pairings, marked `guessed`.
  std::vector<Pairing> settleByGuess();

  bool allClientStreamsArrived() const;
  bool allServerStreamsArrived() const;
  bool allPaired() const;

  // Client connections whose role differs from the one plain accept order would have given them:
  // the deadlocks the proxy prevented. Meaningful once allPaired().
  int repairedRoles() const;

  // Client connections that reached the proxy out of their creation order.
  int misorderedArrivals() const;

  std::optional<Flow> clientFlow(StreamId id) const;
  std::optional<Flow> serverFlow(StreamId id) const;

 private:
  struct ClientStream {
    StreamId id;
    std::uint16_t source_port;
    std::optional<RoleByte> role_byte;
    // Known by evidence (role byte, test mode, data seen, or counting) or, if `guessed`, by the
    // deadline guess. Changed only through setFlow(), which keeps the counters below in step.
    std::optional<Flow> flow;
    bool guessed = false;
    bool paired = false;
  };

  struct ServerStream {
    StreamId id;
    Flow flow;
    bool paired = false;
  };

  using PerFlow = std::array<int, 2>;  // indexed by flowSlot()

  static std::size_t flowSlot(Flow flow) { return flow == Flow::Upload ? 0 : 1; }

  bool isBidir() const { return uploads_ > 0 && downloads_ > 0; }

  int expectedStreams(Flow flow) const { return flow == Flow::Upload ? uploads_ : downloads_; }

  int totalStreams() const { return uploads_ + downloads_; }

  // Client streams of `flow`, guessed ones included.
  int countClients(Flow flow) const { return known_[flowSlot(flow)]; }

  // Server streams of `flow` so far: accept order alone gives their flows.
  int countServers(Flow flow) const;

  ClientStream* findClient(StreamId id);
  const ClientStream* findClient(StreamId id) const;
  const ServerStream* findServer(StreamId id) const;
  void setFlow(ClientStream& stream, std::optional<Flow> flow, bool guessed);

  // Gives the unknown client streams the only flow left once the other flow is complete.
  void inferFlows();
  // Forgets every guessed flow not yet paired (new evidence contradicts the guesses).
  void dropUnpairedGuesses();
  // Pairs every client stream whose flow is certain and whose rank and server stream are known;
  // then, in every flow whose client and server sides are complete and certain, the rest.
  void releaseCertain();
  // How many client streams of a flow claim each role-byte index.
  using IndexClaims = std::array<int, std::size_t{kRoleByteIndexMask} + 1>;
  IndexClaims indexClaims(Flow flow) const;
  // The rank of client stream clients_[index], whose flow is certain, within that flow, if it is
  // known yet: its role-byte index if no other stream claims it, else its place in the creation
  // order if that lies within its flow.
  std::optional<int> certainRank(std::size_t index, const IndexClaims& claims) const;
  // The server stream of `flow` at `rank` in accept order, if it has arrived.
  ServerStream* serverAt(Flow flow, int rank);
  void pair(ClientStream& client, ServerStream& server);
  bool flowCertain(Flow flow) const;
  // Pairs, by rank, as many unpaired client and server streams of `flow` as both sides allow.
  void pairFlow(Flow flow);
  // Indices into clients_ of the client streams of `flow`, in creation order (rank 0 first).
  std::vector<std::size_t> rankedClients(Flow flow) const;
  // Whether every client stream of `flow` carries a distinct role-byte index in range (the
  // indexes then rank the flow).
  bool rankedByRoleBytes(Flow flow) const;

  int uploads_;
  int downloads_;
  std::vector<ClientStream> clients_;  // in arrival order
  std::vector<ServerStream> servers_;  // in accept order
  // Indices into clients_ in the client's creation order as source ports show it, and each
  // stream's place in it; filled once every client stream has arrived (a place means nothing
  // before that).
  std::vector<std::size_t> creation_order_;
  std::vector<int> creation_place_;  // by index into clients_
  std::vector<Pairing> settled_;     // not yet taken
  PerFlow known_{};                  // client streams with a flow, guessed or not
  PerFlow guessed_{};                // client streams whose flow is guessed
  PerFlow paired_{};                 // pairings made
  int ignored_client_data_ = 0;      // clientSentData() calls contradicting known roles
};

}  // namespace iperf3proxy::roles
