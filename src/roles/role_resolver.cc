#include "roles/role_resolver.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace iperf3proxy::roles {
namespace {

constexpr std::uint8_t kDownloadBit = 0x80;
constexpr std::size_t kRoleByteIndexes = std::size_t{kRoleByteIndexMask} + 1;
constexpr int kPortSpace = 65536;
// Linux's default ephemeral port range (net.ipv4.ip_local_port_range). When every port of a test
// lies inside it, the allocator wraps from its top to its bottom, not from 65535 to 0.
constexpr int kLinuxEphemeralLow = 32768;
constexpr int kLinuxEphemeralHigh = 60999;
// Keeps uploads + downloads from overflowing an int, whatever the caller passes.
constexpr int kMaxStreamsPerFlow = std::numeric_limits<int>::max() / 2;
// iperf3 allows -P 128, so --bidir has at most 256 streams; more are allocated on demand.
constexpr int kUsualMaxStreams = 256;
constexpr std::size_t kNoClient = std::numeric_limits<std::size_t>::max();

struct PortEntry {
  std::uint16_t port;
  std::size_t arrival;  // index into the arrival-ordered client list
};

// Orders entries by creation as source ports reveal it: ascending port, arrival order breaking
// ties, rotated so that the sequence starts right after the largest gap between neighbouring ports
// on the port circle (the ephemeral allocator may have wrapped in the middle of a test): Linux's
// default ephemeral range when all ports lie in it, else the whole 16-bit space.
// Returns the arrival indices in that order.
std::vector<std::size_t> circularPortOrder(std::vector<PortEntry> entries) {
  std::sort(entries.begin(), entries.end(), [](const PortEntry& a, const PortEntry& b) {
    return a.port != b.port ? a.port < b.port : a.arrival < b.arrival;
  });
  std::size_t start = 0;
  if (!entries.empty()) {
    // The wrap-around gap wins ties, so unwrapped port sets keep their plain ascending order.
    const bool in_linux_range =
        entries.front().port >= kLinuxEphemeralLow && entries.back().port <= kLinuxEphemeralHigh;
    const int circle = in_linux_range ? kLinuxEphemeralHigh - kLinuxEphemeralLow + 1 : kPortSpace;
    int largest_gap = int{entries.front().port} + circle - int{entries.back().port};
    for (std::size_t i = 0; i + 1 < entries.size(); ++i) {
      const int gap = int{entries[i + 1].port} - int{entries[i].port};
      if (gap > largest_gap) {
        largest_gap = gap;
        start = i + 1;
      }
    }
  }
  std::vector<std::size_t> order;
  order.reserve(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    order.push_back(entries[(start + i) % entries.size()].arrival);
  }
  return order;
}

int clampStreamCount(int count) {
  return std::clamp(count, 0, kMaxStreamsPerFlow);
}

}  // namespace

RoleByte decodeRoleByte(std::uint8_t byte) {
  return RoleByte{(byte & kDownloadBit) != 0 ? Flow::Download : Flow::Upload,
                  static_cast<std::uint8_t>(byte & kRoleByteIndexMask)};
}

std::uint8_t encodeRoleByte(RoleByte role) {
  const std::uint8_t flow_bit = role.flow == Flow::Download ? kDownloadBit : std::uint8_t{0};
  return static_cast<std::uint8_t>(flow_bit | (role.index & kRoleByteIndexMask));
}

RoleResolver::RoleResolver(int upload_streams, int download_streams)
    : uploads_(clampStreamCount(upload_streams)), downloads_(clampStreamCount(download_streams)) {
  const auto usual = static_cast<std::size_t>(std::min(totalStreams(), kUsualMaxStreams));
  clients_.reserve(usual);
  servers_.reserve(usual);
}

void RoleResolver::addClientStream(StreamId id,
                                   std::uint16_t source_port,
                                   std::optional<RoleByte> role_byte) {
  if (clients_.size() >= static_cast<std::size_t>(totalStreams()) || findClient(id) != nullptr) {
    return;
  }
  ClientStream& stream =
      clients_.emplace_back(ClientStream{id, source_port, role_byte, std::nullopt});
  if (!isBidir()) {
    // Forward and -R tests have a single flow: the mode alone says what every stream does.
    setFlow(stream, uploads_ > 0 ? Flow::Upload : Flow::Download, /*guessed=*/false);
  } else if (role_byte) {
    const Flow claimed = role_byte->flow;
    if (countClients(claimed) >= expectedStreams(claimed)) {
      dropUnpairedGuesses();  // evidence outranks guesses
    }
    if (countClients(claimed) < expectedStreams(claimed)) {
      setFlow(stream, claimed, /*guessed=*/false);
    } else {
      // More role bytes claim this flow than it has streams: this one cannot be relied on, so the
      // stream is resolved like one without a role byte.
      stream.role_byte.reset();
    }
  }
  if (allClientStreamsArrived()) {
    // The last one: every stream's place in the creation order is known from now on.
    std::vector<PortEntry> entries;
    entries.reserve(clients_.size());
    for (std::size_t i = 0; i < clients_.size(); ++i) {
      entries.push_back(PortEntry{clients_[i].source_port, i});
    }
    creation_order_ = circularPortOrder(std::move(entries));
    creation_place_.assign(clients_.size(), 0);
    for (std::size_t place = 0; place < creation_order_.size(); ++place) {
      creation_place_[creation_order_[place]] = static_cast<int>(place);
    }
  }
  inferFlows();
  releaseCertain();
}

void RoleResolver::addServerStream(StreamId id) {
  if (servers_.size() >= static_cast<std::size_t>(totalStreams()) || findServer(id) != nullptr) {
    return;
  }
  // docs/PROTOCOL.md §3.5: the server fills its receivers (client uploads) first.
  const Flow flow = countServers(Flow::Upload) < uploads_ ? Flow::Upload : Flow::Download;
  servers_.push_back(ServerStream{id, flow});
  releaseCertain();
}

void RoleResolver::clientSentData(StreamId id) {
  ClientStream* stream = findClient(id);
  if (stream == nullptr) {
    return;
  }
  if (stream->flow == Flow::Upload) {
    setFlow(*stream, Flow::Upload, /*guessed=*/false);  // a guess confirmed by evidence
    releaseCertain();
    return;
  }
  if (stream->flow && (!stream->guessed || stream->paired)) {
    // A client receiver never writes (docs/PROTOCOL.md §3.2). The role byte, the test mode, the
    // counting or the pairing already made is trusted over this data, which is not forwarded before
    // pairing.
    ++ignored_client_data_;
    return;
  }
  if (stream->flow || countClients(Flow::Upload) >= uploads_) {
    // Evidence against an unpaired guess, or for a flow filled by guesses: evidence outranks
    // every guess not yet acted on.
    dropUnpairedGuesses();
  }
  if (countClients(Flow::Upload) >= uploads_) {
    ++ignored_client_data_;
    return;
  }
  setFlow(*stream, Flow::Upload, /*guessed=*/false);
  inferFlows();
  releaseCertain();
}

bool RoleResolver::serverSentData(StreamId id) {
  const ServerStream* stream = findServer(id);
  // An unknown stream proves nothing about the server; only a known receiver that sends does.
  return stream == nullptr || stream->flow == Flow::Download;
}

std::vector<Pairing> RoleResolver::takeSettled() {
  return std::exchange(settled_, {});
}

std::vector<Pairing> RoleResolver::settleByGuess() {
  const auto with_flow =
      static_cast<std::size_t>(countClients(Flow::Upload) + countClients(Flow::Download));
  if (isBidir() && with_flow < clients_.size()) {
    // The client creates its senders first and ephemeral ports increase, so the earliest ports
    // among the streams whose flow is unknown take the upload slots left.
    std::vector<PortEntry> entries;
    entries.reserve(clients_.size());
    for (std::size_t i = 0; i < clients_.size(); ++i) {
      entries.push_back(PortEntry{clients_[i].source_port, i});
    }
    for (const std::size_t index : circularPortOrder(std::move(entries))) {
      ClientStream& stream = clients_[index];
      if (!stream.flow) {
        const bool upload_slot_free = countClients(Flow::Upload) < uploads_;
        setFlow(stream, upload_slot_free ? Flow::Upload : Flow::Download, /*guessed=*/true);
      }
    }
  }
  pairFlow(Flow::Upload);
  pairFlow(Flow::Download);
  return takeSettled();
}

bool RoleResolver::allClientStreamsArrived() const {
  return clients_.size() == static_cast<std::size_t>(totalStreams());
}

bool RoleResolver::allServerStreamsArrived() const {
  return servers_.size() == static_cast<std::size_t>(totalStreams());
}

bool RoleResolver::allPaired() const {
  return paired_[flowSlot(Flow::Upload)] + paired_[flowSlot(Flow::Download)] == totalStreams();
}

int RoleResolver::repairedRoles() const {
  if (!isBidir()) {
    return 0;
  }
  int repaired = 0;
  for (std::size_t i = 0; i < clients_.size(); ++i) {
    // What a plain server would have made of the i-th arrival (docs/PROTOCOL.md §3.5).
    const Flow by_accept_order =
        i < static_cast<std::size_t>(uploads_) ? Flow::Upload : Flow::Download;
    if (clients_[i].flow && *clients_[i].flow != by_accept_order) {
      ++repaired;
    }
  }
  return repaired;
}

int RoleResolver::misorderedArrivals() const {
  // Creation order (docs/PROTOCOL.md §3.1): the senders by rank, then the receivers by rank.
  std::vector<std::size_t> creation = rankedClients(Flow::Upload);
  const std::vector<std::size_t> downloads = rankedClients(Flow::Download);
  creation.insert(creation.end(), downloads.begin(), downloads.end());
  int misordered = 0;
  std::size_t position = 0;  // arrival position among the streams whose flow is known
  for (std::size_t i = 0; i < clients_.size(); ++i) {
    if (!clients_[i].flow) {
      continue;
    }
    if (creation[position] != i) {
      ++misordered;
    }
    ++position;
  }
  return misordered;
}

std::optional<Flow> RoleResolver::clientFlow(StreamId id) const {
  const ClientStream* stream = findClient(id);
  return stream != nullptr ? stream->flow : std::nullopt;
}

std::optional<Flow> RoleResolver::serverFlow(StreamId id) const {
  const ServerStream* stream = findServer(id);
  return stream != nullptr ? std::optional<Flow>(stream->flow) : std::nullopt;
}

int RoleResolver::countServers(Flow flow) const {
  const int arrived = static_cast<int>(servers_.size());
  return flow == Flow::Upload ? std::min(arrived, uploads_) : std::max(arrived - uploads_, 0);
}

RoleResolver::ClientStream* RoleResolver::findClient(StreamId id) {
  for (ClientStream& stream : clients_) {
    if (stream.id == id) {
      return &stream;
    }
  }
  return nullptr;
}

const RoleResolver::ClientStream* RoleResolver::findClient(StreamId id) const {
  for (const ClientStream& stream : clients_) {
    if (stream.id == id) {
      return &stream;
    }
  }
  return nullptr;
}

const RoleResolver::ServerStream* RoleResolver::findServer(StreamId id) const {
  for (const ServerStream& stream : servers_) {
    if (stream.id == id) {
      return &stream;
    }
  }
  return nullptr;
}

void RoleResolver::setFlow(ClientStream& stream, std::optional<Flow> flow, bool guessed) {
  if (stream.flow) {
    --known_[flowSlot(*stream.flow)];
    guessed_[flowSlot(*stream.flow)] -= stream.guessed ? 1 : 0;
  }
  stream.flow = flow;
  stream.guessed = flow && guessed;
  if (stream.flow) {
    ++known_[flowSlot(*stream.flow)];
    guessed_[flowSlot(*stream.flow)] += stream.guessed ? 1 : 0;
  }
}

void RoleResolver::inferFlows() {
  if (!isBidir() || !allClientStreamsArrived()) {
    return;
  }
  Flow full = Flow::Upload;
  if (countClients(Flow::Upload) == uploads_) {
    full = Flow::Upload;
  } else if (countClients(Flow::Download) == downloads_) {
    full = Flow::Download;
  } else {
    return;
  }
  const Flow rest = full == Flow::Upload ? Flow::Download : Flow::Upload;
  // Counting is only as certain as the flows counted.
  const bool from_guesses = guessed_[flowSlot(full)] > 0;
  for (ClientStream& stream : clients_) {
    if (!stream.flow) {
      setFlow(stream, rest, from_guesses);
    }
  }
}

void RoleResolver::dropUnpairedGuesses() {
  for (ClientStream& stream : clients_) {
    if (stream.guessed && !stream.paired) {
      setFlow(stream, std::nullopt, /*guessed=*/false);
    }
  }
}

void RoleResolver::releaseCertain() {
  for (const Flow flow : {Flow::Upload, Flow::Download}) {
    if (flowCertain(flow)) {
      // The whole flow is known: it is ranked as a whole, the way the rest is paired below.
      const std::vector<std::size_t> ranked = rankedClients(flow);
      for (std::size_t rank = 0; rank < ranked.size(); ++rank) {
        ClientStream& client = clients_[ranked[rank]];
        ServerStream* server = serverAt(flow, static_cast<int>(rank));
        if (!client.paired && server != nullptr && !server->paired) {
          pair(client, *server);
        }
      }
      if (countServers(flow) == expectedStreams(flow)) {
        // Whatever an earlier, narrower view ranked differently takes the server streams left.
        pairFlow(flow);
      }
      continue;
    }
    const IndexClaims claims = indexClaims(flow);
    for (std::size_t i = 0; i < clients_.size(); ++i) {
      ClientStream& client = clients_[i];
      if (client.paired || client.flow != flow || client.guessed) {
        continue;
      }
      const std::optional<int> rank = certainRank(i, claims);
      ServerStream* server = rank ? serverAt(flow, *rank) : nullptr;
      if (server != nullptr && !server->paired) {
        pair(client, *server);
      }
    }
  }
}

RoleResolver::IndexClaims RoleResolver::indexClaims(Flow flow) const {
  IndexClaims claims{};
  for (const ClientStream& stream : clients_) {
    if (stream.flow == flow && stream.role_byte && stream.role_byte->flow == flow) {
      ++claims[stream.role_byte->index];
    }
  }
  return claims;
}

std::optional<int> RoleResolver::certainRank(std::size_t index, const IndexClaims& claims) const {
  const ClientStream& stream = clients_[index];
  const Flow flow = *stream.flow;
  const int expected = expectedStreams(flow);
  const std::optional<RoleByte>& role = stream.role_byte;
  if (role && role->flow == flow && role->index < expected && claims[role->index] == 1) {
    return role->index;
  }
  if (creation_place_.empty()) {
    return std::nullopt;
  }
  // The client creates all its senders, then all its receivers (docs/PROTOCOL.md §3.1): a sender's
  // place in the creation order is its rank, a receiver's comes after every sender's. A place
  // outside the stream's flow means the ports do not follow creation here; the whole flow then
  // decides.
  const int place = creation_place_[index];
  const int rank = flow == Flow::Upload ? place : place - uploads_;
  return rank >= 0 && rank < expected ? std::optional<int>(rank) : std::nullopt;
}

RoleResolver::ServerStream* RoleResolver::serverAt(Flow flow, int rank) {
  if (rank < 0 || rank >= expectedStreams(flow)) {
    return nullptr;
  }
  // Accept order: the server's receivers (client uploads) first (docs/PROTOCOL.md §3.5).
  const auto index = static_cast<std::size_t>(flow == Flow::Upload ? rank : uploads_ + rank);
  return index < servers_.size() ? &servers_[index] : nullptr;
}

void RoleResolver::pair(ClientStream& client, ServerStream& server) {
  client.paired = true;
  server.paired = true;
  ++paired_[flowSlot(*client.flow)];
  settled_.push_back(Pairing{client.id, server.id, *client.flow, client.guessed});
}

bool RoleResolver::flowCertain(Flow flow) const {
  const std::size_t slot = flowSlot(flow);
  return known_[slot] - guessed_[slot] == expectedStreams(flow);
}

void RoleResolver::pairFlow(Flow flow) {
  const std::size_t slot = flowSlot(flow);
  if (paired_[slot] >= std::min(countClients(flow), countServers(flow))) {
    return;  // nothing left to pair on one side
  }
  auto server = servers_.begin();
  for (const std::size_t index : rankedClients(flow)) {
    ClientStream& client = clients_[index];
    if (client.paired) {
      continue;
    }
    server = std::find_if(server, servers_.end(), [flow](const ServerStream& candidate) {
      return candidate.flow == flow && !candidate.paired;
    });
    if (server == servers_.end()) {
      return;
    }
    pair(client, *server);
  }
}

std::vector<std::size_t> RoleResolver::rankedClients(Flow flow) const {
  std::vector<std::size_t> ranked;
  if (rankedByRoleBytes(flow)) {
    // The role-byte index is the client's own creation rank.
    std::array<std::size_t, kRoleByteIndexes> by_index{};
    std::fill(by_index.begin(), by_index.end(), kNoClient);
    for (std::size_t i = 0; i < clients_.size(); ++i) {
      if (clients_[i].flow == flow) {
        by_index[clients_[i].role_byte->index] = i;
      }
    }
    std::copy_if(by_index.begin(), by_index.end(), std::back_inserter(ranked),
                 [](std::size_t i) { return i != kNoClient; });
    return ranked;
  }
  if (!creation_order_.empty()) {
    // Ranked within the order of all the client's streams, so that a rank given to one stream
    // before its flow was complete stays the same.
    std::copy_if(creation_order_.begin(), creation_order_.end(), std::back_inserter(ranked),
                 [&](std::size_t i) { return clients_[i].flow == flow; });
    return ranked;
  }
  std::vector<PortEntry> entries;
  for (std::size_t i = 0; i < clients_.size(); ++i) {
    if (clients_[i].flow == flow) {
      entries.push_back(PortEntry{clients_[i].source_port, i});
    }
  }
  return circularPortOrder(std::move(entries));
}

bool RoleResolver::rankedByRoleBytes(Flow flow) const {
  const std::size_t index_limit =
      std::min(static_cast<std::size_t>(expectedStreams(flow)), kRoleByteIndexes);
  std::array<bool, kRoleByteIndexes> taken{};
  for (const ClientStream& stream : clients_) {
    if (stream.flow != flow) {
      continue;
    }
    const std::optional<RoleByte>& role = stream.role_byte;
    if (!role || role->flow != flow || role->index >= index_limit || taken[role->index]) {
      return false;
    }
    taken[role->index] = true;
  }
  return true;
}

}  // namespace iperf3proxy::roles
