#include "roles/role_resolver.h"

#include <algorithm>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace iperf3proxy::roles {
namespace {

// Client stream Ck (k = creation index) has id kClientBase + k; the server stream the proxy
// dialed j-th (accept order) has id kServerBase + j.
constexpr StreamId kClientBase = 100;
constexpr StreamId kServerBase = 200;
constexpr std::uint16_t kFirstPort = 40000;
constexpr std::uint16_t kWrappingFirstPort = 65533;

StreamId clientId(int creation_index) {
  return kClientBase + static_cast<StreamId>(creation_index);
}

StreamId serverId(int accept_index) {
  return kServerBase + static_cast<StreamId>(accept_index);
}

// Ephemeral ports increase with creation; past 65535 they continue at 1024.
std::uint16_t portOf(std::uint16_t first_port, int creation_index) {
  int port = first_port + creation_index;
  if (port > 65535) {
    port = port - 65536 + 1024;
  }
  return static_cast<std::uint16_t>(port);
}

std::vector<int> iota(int count) {
  std::vector<int> values(static_cast<std::size_t>(count));
  std::iota(values.begin(), values.end(), 0);
  return values;
}

std::string describe(const std::vector<int>& arrival) {
  std::ostringstream out;
  out << "arrival order:";
  for (const int k : arrival) {
    out << " C" << k;
  }
  return out.str();
}

void collect(std::vector<Pairing>& into, std::vector<Pairing> from) {
  into.insert(into.end(), from.begin(), from.end());
}

// Checks that every client stream Ck is paired exactly once with the server stream of the same
// flow and rank, which (servers accepted uploads first, clients created senders first) is the
// k-th server stream. Returns a description of the first problem, or "" when all is right.
std::string checkPairedByCreationOrder(const std::vector<Pairing>& pairings,
                                       int uploads,
                                       int downloads,
                                       bool expect_guessed = false) {
  const int total = uploads + downloads;
  if (pairings.size() != static_cast<std::size_t>(total)) {
    return "expected " + std::to_string(total) + " pairings, got " +
           std::to_string(pairings.size());
  }
  std::vector<bool> client_paired(static_cast<std::size_t>(total), false);
  for (const Pairing& pairing : pairings) {
    const int creation = static_cast<int>(pairing.client - kClientBase);
    const int accept = static_cast<int>(pairing.server - kServerBase);
    const Flow flow = creation < uploads ? Flow::Upload : Flow::Download;
    if (creation < 0 || creation >= total) {
      return "paired an unknown client stream";
    }
    // Every client stream paired once, each with a distinct server (accept == creation below).
    if (client_paired[static_cast<std::size_t>(creation)]) {
      return "C" + std::to_string(creation) + " was paired twice";
    }
    client_paired[static_cast<std::size_t>(creation)] = true;
    if (accept != creation) {
      return "C" + std::to_string(creation) + " paired with S" + std::to_string(accept);
    }
    if (pairing.flow != flow) {
      return "C" + std::to_string(creation) + " paired in the wrong flow";
    }
    if (pairing.guessed != expect_guessed) {
      return "C" + std::to_string(creation) + " has guessed=" + std::to_string(pairing.guessed);
    }
  }
  return "";
}

int expectedRepairs(const std::vector<int>& arrival, int uploads) {
  // A plain server makes the first `uploads` arrivals receivers; each client receiver among them
  // swaps roles with one client sender that arrived later.
  const auto first = arrival.begin() + uploads;
  return 2 * static_cast<int>(
                 std::count_if(arrival.begin(), first, [uploads](int k) { return k >= uploads; }));
}

int expectedMisordered(const std::vector<int>& arrival) {
  int misordered = 0;
  for (std::size_t i = 0; i < arrival.size(); ++i) {
    if (arrival[i] != static_cast<int>(i)) {
      ++misordered;
    }
  }
  return misordered;
}

enum class Evidence { DataOnly, RoleBytesAndData, RoleBytesOnly };

// What a --bidir -P n test has shown the resolver so far, and which pairings that makes certain.
// Client stream Ck's rank is k within its flow; it joins the server stream with accept index k.
struct BidirFacts {
  int n;
  bool role_bytes;
  std::vector<bool> arrived;  // by creation index
  std::vector<bool> sent;     // by creation index
  int servers = 0;            // server streams added so far (accept indexes 0..servers-1)

  BidirFacts(int streams_per_flow, bool with_role_bytes)
      : n(streams_per_flow),
        role_bytes(with_role_bytes),
        arrived(static_cast<std::size_t>(2 * n), false),
        sent(static_cast<std::size_t>(2 * n), false) {}

  bool allArrived() const { return std::count(arrived.begin(), arrived.end(), true) == 2 * n; }

  bool allSendersSent() const { return std::count(sent.begin(), sent.begin() + n, true) == n; }

  // Ck must be paired now: its flow is certain (role byte; its own data; or, for a receiver,
  // every sender's data), its rank is known (role byte; or its place among all the client's
  // streams once all have arrived) and the server stream of that rank exists.
  bool mustBePaired(int k) const {
    const auto i = static_cast<std::size_t>(k);
    if (!arrived[i] || servers <= k) {
      return false;
    }
    if (role_bytes) {
      return true;
    }
    const bool flow_certain = k < n ? sent[i] : allSendersSent();
    return flow_certain && allArrived();
  }
};

// Takes what the resolver released and checks that it is exactly what the facts make certain:
// every pairing at the earliest moment, none before. Returns a problem or "".
std::string takeAndCheck(RoleResolver& resolver,
                         const BidirFacts& facts,
                         std::vector<Pairing>& pairings,
                         const std::string& after) {
  collect(pairings, resolver.takeSettled());
  std::vector<bool> paired(static_cast<std::size_t>(2 * facts.n), false);
  for (const Pairing& pairing : pairings) {
    const auto creation = static_cast<std::size_t>(pairing.client - kClientBase);
    if (creation < paired.size()) {
      paired[creation] = true;
    }
  }
  for (int k = 0; k < 2 * facts.n; ++k) {
    if (paired[static_cast<std::size_t>(k)] != facts.mustBePaired(k)) {
      return "after " + after + ": C" + std::to_string(k) +
             (facts.mustBePaired(k) ? " is not paired yet" : " was paired too early");
    }
  }
  return "";
}

// One --bidir -P n test: client streams arrive in `arrival` order, the proxy dials one backend
// stream per arrival (all of them at once, or the second half only after the client's senders
// have sent, `late_servers`), then the client's senders send (in reverse creation order). After
// every step the released pairings must be exactly the certain ones (BidirFacts).
std::string runBidir(const std::vector<int>& arrival,
                     int n,
                     Evidence evidence,
                     std::uint16_t first_port,
                     bool late_servers = false) {
  RoleResolver resolver(n, n);
  BidirFacts facts(n, evidence != Evidence::DataOnly);
  std::vector<Pairing> pairings;
  const int servers_at_once = late_servers ? n : 2 * n;
  for (std::size_t j = 0; j < arrival.size(); ++j) {
    const int k = arrival[j];
    std::optional<RoleByte> role_byte;
    if (evidence != Evidence::DataOnly) {
      role_byte = RoleByte{k < n ? Flow::Upload : Flow::Download, static_cast<std::uint8_t>(k % n)};
    }
    resolver.addClientStream(clientId(k), portOf(first_port, k), role_byte);
    facts.arrived[static_cast<std::size_t>(k)] = true;
    if (std::string problem = takeAndCheck(resolver, facts, pairings, "C" + std::to_string(k));
        !problem.empty()) {
      return problem;
    }
    if (static_cast<int>(j) < servers_at_once) {
      resolver.addServerStream(serverId(static_cast<int>(j)));
      ++facts.servers;
      if (std::string problem = takeAndCheck(resolver, facts, pairings, "S" + std::to_string(j));
          !problem.empty()) {
        return problem;
      }
    }
  }
  if (!resolver.allClientStreamsArrived()) {
    return "not all client streams counted as arrived";
  }
  if (evidence != Evidence::RoleBytesOnly) {
    for (int k = n - 1; k >= 0; --k) {
      resolver.clientSentData(clientId(k));
      facts.sent[static_cast<std::size_t>(k)] = true;
      if (std::string problem =
              takeAndCheck(resolver, facts, pairings, "data on C" + std::to_string(k));
          !problem.empty()) {
        return problem;
      }
    }
  }
  while (facts.servers < 2 * n) {
    resolver.addServerStream(serverId(facts.servers));
    ++facts.servers;
    if (std::string problem =
            takeAndCheck(resolver, facts, pairings, "S" + std::to_string(facts.servers - 1));
        !problem.empty()) {
      return problem;
    }
  }
  if (std::string problem = checkPairedByCreationOrder(pairings, n, n); !problem.empty()) {
    return problem;
  }
  if (!resolver.allPaired()) {
    return "allPaired() is false";
  }
  if (!resolver.takeSettled().empty() || !resolver.settleByGuess().empty()) {
    return "a pairing was returned twice";
  }
  if (resolver.repairedRoles() != expectedRepairs(arrival, n)) {
    return "repairedRoles() = " + std::to_string(resolver.repairedRoles());
  }
  if (resolver.misorderedArrivals() != expectedMisordered(arrival)) {
    return "misorderedArrivals() = " + std::to_string(resolver.misorderedArrivals());
  }
  return "";
}

// One forward (-P n) or -R -P n test: everything pairs as soon as all streams exist.
std::string runSingleFlow(const std::vector<int>& arrival,
                          int n,
                          Flow flow,
                          std::uint16_t first_port) {
  const int uploads = flow == Flow::Upload ? n : 0;
  RoleResolver resolver(uploads, n - uploads);
  std::vector<Pairing> pairings;
  for (std::size_t j = 0; j < arrival.size(); ++j) {
    resolver.addClientStream(clientId(arrival[j]), portOf(first_port, arrival[j]));
    collect(pairings, resolver.takeSettled());
    if (resolver.clientFlow(clientId(arrival[j])) != flow) {
      return "a client stream's flow is not known at once";
    }
    resolver.addServerStream(serverId(static_cast<int>(j)));
    std::vector<Pairing> settled = resolver.takeSettled();
    if (j + 1 < arrival.size() && !settled.empty()) {
      return "paired before every stream arrived";
    }
    collect(pairings, std::move(settled));
  }
  if (std::string problem = checkPairedByCreationOrder(pairings, uploads, n - uploads);
      !problem.empty()) {
    return problem;
  }
  if (!resolver.allPaired()) {
    return "allPaired() is false";
  }
  if (resolver.repairedRoles() != 0) {
    return "repairedRoles() = " + std::to_string(resolver.repairedRoles());
  }
  if (resolver.misorderedArrivals() != expectedMisordered(arrival)) {
    return "misorderedArrivals() = " + std::to_string(resolver.misorderedArrivals());
  }
  return "";
}

// The first port of permutation number `serial`: cycles through every position at which the
// ephemeral ports can wrap from 65535 to 1024 (including before the first stream, i.e. not
// wrapping) so that exhaustive runs cover wrapped ports as well.
std::uint16_t firstPortFor(long serial, int streams) {
  const auto offset = static_cast<int>(serial % (streams + 1));
  return offset == streams ? kFirstPort : static_cast<std::uint16_t>(65535 - offset);
}

void expectBidirEveryPermutation(bool role_bytes) {
  for (int n = 1; n <= 4; ++n) {
    std::vector<int> arrival = iota(2 * n);
    long serial = 0;
    do {
      // With role bytes, every other arrival order also sees the senders' data (and ignores it).
      const Evidence evidence = !role_bytes       ? Evidence::DataOnly
                                : serial % 2 == 0 ? Evidence::RoleBytesOnly
                                                  : Evidence::RoleBytesAndData;
      const std::uint16_t first_port = firstPortFor(serial / 2, 2 * n);
      // Every other order (of each parity) dials the server's sending streams only after the
      // client's senders have sent: a receiver then pairs when its own server stream exists.
      const bool late_servers = (serial / 2) % 2 == 1;
      const std::string problem = runBidir(arrival, n, evidence, first_port, late_servers);
      ASSERT_EQ(problem, "") << "--bidir -P " << n << ", " << describe(arrival) << ", first port "
                             << first_port << (late_servers ? ", late servers" : "");
      ++serial;
    } while (std::next_permutation(arrival.begin(), arrival.end()));
  }
}

void expectSingleFlowEveryPermutation(Flow flow, std::uint16_t first_port) {
  for (int n = 1; n <= 4; ++n) {
    std::vector<int> arrival = iota(n);
    do {
      const std::string problem = runSingleFlow(arrival, n, flow, first_port);
      ASSERT_EQ(problem, "") << "-P " << n << ", " << describe(arrival);
    } while (std::next_permutation(arrival.begin(), arrival.end()));
  }
}

// Adds the client streams of a test in the given arrival order, with creation-order ports.
void addClients(RoleResolver& resolver,
                const std::vector<int>& arrival,
                std::uint16_t first_port = kFirstPort) {
  for (const int k : arrival) {
    resolver.addClientStream(clientId(k), portOf(first_port, k));
  }
}

void addServers(RoleResolver& resolver, int first, int count) {
  for (int j = first; j < first + count; ++j) {
    resolver.addServerStream(serverId(j));
  }
}

// --- Role byte encoding ---

TEST(RoleByteTest, Bit7MeansDownloadAndLowBitsAreTheIndex) {
  const RoleByte upload = decodeRoleByte(0x05);
  EXPECT_EQ(upload.flow, Flow::Upload);
  EXPECT_EQ(upload.index, 5);
  const RoleByte download = decodeRoleByte(0x83);
  EXPECT_EQ(download.flow, Flow::Download);
  EXPECT_EQ(download.index, 3);
  EXPECT_EQ(encodeRoleByte(RoleByte{Flow::Download, 127}), 0xff);
  EXPECT_EQ(encodeRoleByte(RoleByte{Flow::Upload, 0}), 0x00);
}

TEST(RoleByteTest, EveryByteRoundTrips) {
  for (int value = 0; value <= 255; ++value) {
    const auto byte = static_cast<std::uint8_t>(value);
    EXPECT_EQ(encodeRoleByte(decodeRoleByte(byte)), byte);
  }
}

TEST(RoleByteTest, EncodingMasksAnOutOfRangeIndex) {
  EXPECT_EQ(encodeRoleByte(RoleByte{Flow::Upload, 0x85}), 0x05);
}

// --- Every arrival order ---

TEST(RoleResolverTest, BidirEveryArrivalOrderPairsEachStreamOnceItsRoleIsCertain) {
  expectBidirEveryPermutation(/*role_bytes=*/false);
}

TEST(RoleResolverTest, BidirEveryArrivalOrderPairsEachStreamByRoleByteOnArrival) {
  expectBidirEveryPermutation(/*role_bytes=*/true);
}

TEST(RoleResolverTest, ForwardEveryArrivalOrderPairsAtOnceByPort) {
  expectSingleFlowEveryPermutation(Flow::Upload, kFirstPort);
  expectSingleFlowEveryPermutation(Flow::Upload, kWrappingFirstPort);
}

TEST(RoleResolverTest, ReverseEveryArrivalOrderPairsAtOnceByPort) {
  expectSingleFlowEveryPermutation(Flow::Download, kFirstPort);
  expectSingleFlowEveryPermutation(Flow::Download, kWrappingFirstPort);
}

// --- Evidence and certainty ---

TEST(RoleResolverTest, BidirWithoutRoleBytesLeavesFlowsUnknownUntilDataArrives) {
  RoleResolver resolver(2, 2);
  addClients(resolver, {0, 1, 2, 3});
  addServers(resolver, 0, 4);
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(resolver.clientFlow(clientId(k)), std::nullopt);
  }
  EXPECT_TRUE(resolver.takeSettled().empty());
  EXPECT_FALSE(resolver.allPaired());
}

TEST(RoleResolverTest, BidirReceiversAreInferredOnceAllSendersSentData) {
  RoleResolver resolver(2, 2);
  addClients(resolver, {2, 0, 3, 1});
  resolver.clientSentData(clientId(1));
  EXPECT_EQ(resolver.clientFlow(clientId(1)), Flow::Upload);
  EXPECT_EQ(resolver.clientFlow(clientId(0)), std::nullopt);
  resolver.clientSentData(clientId(0));
  EXPECT_EQ(resolver.clientFlow(clientId(2)), Flow::Download);
  EXPECT_EQ(resolver.clientFlow(clientId(3)), Flow::Download);
}

TEST(RoleResolverTest, BidirSendersAreInferredFromDownloadRoleBytes) {
  RoleResolver resolver(1, 2);
  resolver.addClientStream(clientId(1), portOf(kFirstPort, 1), RoleByte{Flow::Download, 0});
  resolver.addClientStream(clientId(0), portOf(kFirstPort, 0));
  EXPECT_EQ(resolver.clientFlow(clientId(0)), std::nullopt);
  resolver.addClientStream(clientId(2), portOf(kFirstPort, 2), RoleByte{Flow::Download, 1});
  EXPECT_EQ(resolver.clientFlow(clientId(0)), Flow::Upload);
  addServers(resolver, 0, 3);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 1, 2), "");
}

TEST(RoleResolverTest, EachStreamIsReleasedAsSoonAsItsServerStreamExists) {
  RoleResolver resolver(2, 2);
  resolver.addClientStream(clientId(0), portOf(kFirstPort, 0), RoleByte{Flow::Upload, 0});
  EXPECT_TRUE(resolver.takeSettled().empty());  // no server stream yet
  resolver.addServerStream(serverId(0));
  std::vector<Pairing> first = resolver.takeSettled();
  ASSERT_EQ(first.size(), 1U);  // the other upload has not even arrived
  EXPECT_EQ(first[0].client, clientId(0));
  EXPECT_EQ(first[0].server, serverId(0));
  // A receiver whose rank is 1 waits for the server's second sending stream, not the first.
  resolver.addClientStream(clientId(3), portOf(kFirstPort, 3), RoleByte{Flow::Download, 1});
  addServers(resolver, 1, 2);  // S1 (receiving), S2 (sending, rank 0)
  EXPECT_TRUE(resolver.takeSettled().empty());
  resolver.addServerStream(serverId(3));
  std::vector<Pairing> second = resolver.takeSettled();
  ASSERT_EQ(second.size(), 1U);
  EXPECT_EQ(second[0].client, clientId(3));
  EXPECT_EQ(second[0].server, serverId(3));
  EXPECT_EQ(second[0].flow, Flow::Download);
}

TEST(RoleResolverTest, ASenderIsPairedOnItsOwnDataWithoutWaitingForTheOtherSenders) {
  RoleResolver resolver(3, 3);
  addClients(resolver, {4, 0, 5, 2, 1, 3});
  addServers(resolver, 0, 6);
  resolver.clientSentData(clientId(2));
  std::vector<Pairing> pairings = resolver.takeSettled();
  ASSERT_EQ(pairings.size(), 1U);
  EXPECT_EQ(pairings[0].client, clientId(2));
  EXPECT_EQ(pairings[0].server, serverId(2));  // its rank among the senders, from its port
  EXPECT_FALSE(pairings[0].guessed);
  resolver.clientSentData(clientId(0));
  std::vector<Pairing> second = resolver.takeSettled();
  EXPECT_EQ(second.size(), 1U);
  collect(pairings, std::move(second));
  // The last sender's data makes the receivers certain, by counting: all pair at once.
  resolver.clientSentData(clientId(1));
  std::vector<Pairing> rest = resolver.takeSettled();
  EXPECT_EQ(rest.size(), 4U);
  collect(pairings, std::move(rest));
  EXPECT_EQ(checkPairedByCreationOrder(pairings, 3, 3), "");
}

TEST(RoleResolverTest, ASenderThatNeverSendsLeavesTheReceiversUnpaired) {
  // A short -n test: the client reaches its byte count on its first sender and ends the test
  // without ever writing on the second. Nothing tells that sender from the two receivers, so
  // none of the three is paired (no guess), while the first sender is.
  RoleResolver resolver(2, 2);
  addClients(resolver, {0, 1, 2, 3});
  addServers(resolver, 0, 4);
  resolver.clientSentData(clientId(0));
  const std::vector<Pairing> pairings = resolver.takeSettled();
  ASSERT_EQ(pairings.size(), 1U);
  EXPECT_EQ(pairings[0].client, clientId(0));
  EXPECT_EQ(pairings[0].server, serverId(0));
  for (const int k : {1, 2, 3}) {
    EXPECT_EQ(resolver.clientFlow(clientId(k)), std::nullopt) << "C" << k;
  }
  EXPECT_FALSE(resolver.allPaired());
}

TEST(RoleResolverTest, PortsAgainstCreationOrderStillGiveEveryStreamItsCertainRole) {
  // Source ports that do not follow creation (a NAT, say): sender C0 has the highest port.
  RoleResolver resolver(2, 2);
  resolver.addClientStream(clientId(0), 40010);
  resolver.addClientStream(clientId(1), 40000);
  resolver.addClientStream(clientId(2), 40001);
  resolver.addClientStream(clientId(3), 40002);
  addServers(resolver, 0, 4);
  resolver.clientSentData(clientId(0));
  // C0's place among the ports (last) is no sender's rank: it waits for its flow.
  EXPECT_TRUE(resolver.takeSettled().empty());
  resolver.clientSentData(clientId(1));
  std::vector<Pairing> pairings = resolver.takeSettled();
  ASSERT_EQ(pairings.size(), 4U);
  for (const Pairing& pairing : pairings) {
    const int creation = static_cast<int>(pairing.client - kClientBase);
    EXPECT_EQ(pairing.flow, creation < 2 ? Flow::Upload : Flow::Download) << "C" << creation;
    EXPECT_EQ(resolver.serverFlow(pairing.server), pairing.flow);
    EXPECT_FALSE(pairing.guessed);
  }
  EXPECT_TRUE(resolver.allPaired());
}

TEST(RoleResolverTest, ARankTakenEarlyLeavesTheFlowToPairTheRest) {
  // Two senders claim index 0. The first one to arrive takes rank 0 at once; the other gets no
  // rank from its byte, and once the flow is complete it takes the server stream left.
  RoleResolver resolver(2, 0);
  resolver.addClientStream(clientId(1), portOf(kFirstPort, 1), RoleByte{Flow::Upload, 0});
  resolver.addServerStream(serverId(0));
  std::vector<Pairing> pairings = resolver.takeSettled();
  ASSERT_EQ(pairings.size(), 1U);
  EXPECT_EQ(pairings[0].client, clientId(1));
  resolver.addClientStream(clientId(0), portOf(kFirstPort, 0), RoleByte{Flow::Upload, 0});
  resolver.addServerStream(serverId(1));
  collect(pairings, resolver.takeSettled());
  ASSERT_EQ(pairings.size(), 2U);
  EXPECT_EQ(pairings[1].client, clientId(0));
  EXPECT_EQ(pairings[1].server, serverId(1));
  EXPECT_TRUE(resolver.allPaired());
}

TEST(RoleResolverTest, ForwardStreamsPairOnceAllArrivedEachWithItsServerStream) {
  // Without role bytes a stream's rank needs every port; then each pairs as its server comes.
  RoleResolver resolver(3, 0);
  addClients(resolver, {2, 0});
  addServers(resolver, 0, 1);
  EXPECT_TRUE(resolver.takeSettled().empty());
  addClients(resolver, {1});
  std::vector<Pairing> pairings = resolver.takeSettled();
  ASSERT_EQ(pairings.size(), 1U);
  EXPECT_EQ(pairings[0].client, clientId(0));
  addServers(resolver, 1, 2);
  collect(pairings, resolver.takeSettled());
  EXPECT_EQ(checkPairedByCreationOrder(pairings, 3, 0), "");
}

TEST(RoleResolverTest, RoleByteIsTrustedOverContradictingData) {
  RoleResolver resolver(1, 1);
  resolver.addClientStream(clientId(0), portOf(kFirstPort, 0), RoleByte{Flow::Upload, 0});
  resolver.addClientStream(clientId(1), portOf(kFirstPort, 1), RoleByte{Flow::Download, 0});
  resolver.clientSentData(clientId(1));
  EXPECT_EQ(resolver.clientFlow(clientId(1)), Flow::Download);
  EXPECT_EQ(resolver.clientFlow(clientId(0)), Flow::Upload);
  addServers(resolver, 0, 2);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 1, 1), "");
}

TEST(RoleResolverTest, RoleByteIndexRanksStreamsOverPortOrder) {
  RoleResolver resolver(2, 0);
  // C0 has the higher port (e.g. a NAT rewrote it) but its role byte says it was created first.
  resolver.addClientStream(clientId(1), 50000, RoleByte{Flow::Upload, 1});
  resolver.addClientStream(clientId(0), 50001, RoleByte{Flow::Upload, 0});
  addServers(resolver, 0, 2);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 2, 0), "");
  EXPECT_EQ(resolver.misorderedArrivals(), 2);
}

TEST(RoleResolverTest, DuplicateRoleByteIndexesFallBackToPortOrder) {
  RoleResolver resolver(2, 0);
  resolver.addClientStream(clientId(1), portOf(kFirstPort, 1), RoleByte{Flow::Upload, 0});
  resolver.addClientStream(clientId(0), portOf(kFirstPort, 0), RoleByte{Flow::Upload, 0});
  addServers(resolver, 0, 2);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 2, 0), "");
}

TEST(RoleResolverTest, OutOfRangeRoleByteIndexFallsBackToPortOrder) {
  RoleResolver resolver(2, 0);
  resolver.addClientStream(clientId(1), portOf(kFirstPort, 1), RoleByte{Flow::Upload, 0});
  resolver.addClientStream(clientId(0), portOf(kFirstPort, 0), RoleByte{Flow::Upload, 2});
  addServers(resolver, 0, 2);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 2, 0), "");
}

TEST(RoleResolverTest, RoleByteClaimingAFullFlowIsIgnored) {
  RoleResolver resolver(1, 1);
  resolver.addClientStream(clientId(0), portOf(kFirstPort, 0), RoleByte{Flow::Upload, 0});
  resolver.addClientStream(clientId(1), portOf(kFirstPort, 1), RoleByte{Flow::Upload, 0});
  // Counting resolves the second stream: the only upload slot is taken.
  EXPECT_EQ(resolver.clientFlow(clientId(1)), Flow::Download);
  addServers(resolver, 0, 2);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 1, 1), "");
}

TEST(RoleResolverTest, DataBeyondTheUploadCountIsIgnored) {
  RoleResolver resolver(1, 2);
  addClients(resolver, {0, 1, 2});
  resolver.clientSentData(clientId(0));
  resolver.clientSentData(clientId(2));  // only one upload slot: a contradiction, ignored
  EXPECT_EQ(resolver.clientFlow(clientId(2)), Flow::Download);
  addServers(resolver, 0, 3);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 1, 2), "");
}

TEST(RoleResolverTest, DataOnAReverseTestStreamIsIgnored) {
  RoleResolver resolver(0, 2);
  addClients(resolver, {0, 1});
  resolver.clientSentData(clientId(0));
  EXPECT_EQ(resolver.clientFlow(clientId(0)), Flow::Download);
  addServers(resolver, 0, 2);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 0, 2), "");
}

TEST(RoleResolverTest, EachPairingIsReturnedOnce) {
  RoleResolver resolver(1, 0);
  addClients(resolver, {0});
  addServers(resolver, 0, 1);
  EXPECT_EQ(resolver.takeSettled().size(), 1U);
  EXPECT_TRUE(resolver.takeSettled().empty());
  EXPECT_TRUE(resolver.settleByGuess().empty());
  EXPECT_TRUE(resolver.allPaired());
}

// --- Server side ---

TEST(RoleResolverTest, ServerFlowFollowsAcceptOrderReceiversFirst) {
  RoleResolver resolver(2, 1);
  addServers(resolver, 0, 3);
  EXPECT_EQ(resolver.serverFlow(serverId(0)), Flow::Upload);
  EXPECT_EQ(resolver.serverFlow(serverId(1)), Flow::Upload);
  EXPECT_EQ(resolver.serverFlow(serverId(2)), Flow::Download);
  EXPECT_TRUE(resolver.allServerStreamsArrived());
}

TEST(RoleResolverTest, ServerDataOnAReceiverIsAContradiction) {
  RoleResolver resolver(1, 1);
  addServers(resolver, 0, 2);
  EXPECT_FALSE(resolver.serverSentData(serverId(0)));
  EXPECT_TRUE(resolver.serverSentData(serverId(1)));
}

TEST(RoleResolverTest, ServerDataOnAnUnknownStreamIsNoContradiction) {
  RoleResolver resolver(1, 1);
  EXPECT_TRUE(resolver.serverSentData(serverId(7)));
  EXPECT_EQ(resolver.serverFlow(serverId(7)), std::nullopt);
}

// --- Counters ---

TEST(RoleResolverTest, SwappedBidirArrivalCountsTwoRepairedRoles) {
  RoleResolver resolver(1, 1);
  addClients(resolver, {1, 0});
  addServers(resolver, 0, 2);
  resolver.clientSentData(clientId(0));
  EXPECT_EQ(resolver.takeSettled().size(), 2U);
  EXPECT_EQ(resolver.repairedRoles(), 2);
  EXPECT_EQ(resolver.misorderedArrivals(), 2);
}

TEST(RoleResolverTest, ReorderingInsideOneFlowIsMisorderedButNotRepaired) {
  RoleResolver resolver(2, 2);
  addClients(resolver, {1, 0, 3, 2});
  addServers(resolver, 0, 4);
  resolver.clientSentData(clientId(0));
  resolver.clientSentData(clientId(1));
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 2, 2), "");
  EXPECT_EQ(resolver.repairedRoles(), 0);
  EXPECT_EQ(resolver.misorderedArrivals(), 4);
}

// --- Source ports ---

TEST(RoleResolverTest, WrappedPortsRankTheHighPortsFirst) {
  RoleResolver resolver(3, 0);
  resolver.addClientStream(clientId(2), 1024);
  resolver.addClientStream(clientId(0), 65534);
  resolver.addClientStream(clientId(1), 65535);
  addServers(resolver, 0, 3);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 3, 0), "");
}

TEST(RoleResolverTest, PortsWrappingInsideLinuxEphemeralRangeRankTheHighPortsFirst) {
  // Linux allocates ephemeral ports in 32768..60999 by default and wraps from 60999 to 32768.
  RoleResolver resolver(4, 0);
  resolver.addClientStream(clientId(2), 32768);
  resolver.addClientStream(clientId(3), 32770);
  resolver.addClientStream(clientId(0), 60996);
  resolver.addClientStream(clientId(1), 60998);
  addServers(resolver, 0, 4);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 4, 0), "");
}

TEST(RoleResolverTest, EqualPortsRankInArrivalOrder) {
  RoleResolver resolver(2, 0);
  resolver.addClientStream(clientId(0), 0);
  resolver.addClientStream(clientId(1), 0);
  addServers(resolver, 0, 2);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 2, 0), "");
  EXPECT_EQ(resolver.misorderedArrivals(), 0);
}

// --- Deadline fallback ---

TEST(RoleResolverTest, SettleByGuessWithoutDataTakesTheLowestPortsAsSenders) {
  RoleResolver resolver(2, 2);
  addClients(resolver, {2, 3, 1, 0});
  addServers(resolver, 0, 4);
  EXPECT_TRUE(resolver.takeSettled().empty());
  EXPECT_EQ(checkPairedByCreationOrder(resolver.settleByGuess(), 2, 2, /*expect_guessed=*/true),
            "");
  EXPECT_TRUE(resolver.allPaired());
  EXPECT_EQ(resolver.repairedRoles(), 4);
}

TEST(RoleResolverTest, SettleByGuessFollowsWrappedPorts) {
  RoleResolver resolver(2, 2);
  addClients(resolver, {3, 2, 1, 0}, kWrappingFirstPort);  // ports 65533 65534 65535 1024
  addServers(resolver, 0, 4);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.settleByGuess(), 2, 2, /*expect_guessed=*/true),
            "");
}

TEST(RoleResolverTest, SettleByGuessKeepsKnownSendersAndGuessesOnlyTheRest) {
  RoleResolver resolver(2, 2);
  addClients(resolver, {0, 2, 1, 3});
  addServers(resolver, 0, 4);
  resolver.clientSentData(clientId(1));
  std::vector<Pairing> pairings = resolver.takeSettled();
  ASSERT_EQ(pairings.size(), 1U);  // the known sender, paired on its own data
  collect(pairings, resolver.settleByGuess());
  ASSERT_EQ(pairings.size(), 4U);
  for (const Pairing& pairing : pairings) {
    EXPECT_EQ(pairing.server - kServerBase, pairing.client - kClientBase);
    EXPECT_EQ(pairing.guessed, pairing.client != clientId(1));
  }
  EXPECT_EQ(resolver.clientFlow(clientId(0)), Flow::Upload);
  EXPECT_EQ(resolver.clientFlow(clientId(2)), Flow::Download);
}

TEST(RoleResolverTest, SettleByGuessGivesTheFreeUploadSlotToTheLowestUnknownPort) {
  RoleResolver resolver(2, 2);
  // Known sender C3 (its data says so, whatever its port): the one free upload slot goes to the
  // lowest-port stream among the unknown ones, C0.
  addClients(resolver, {0, 1, 2, 3});
  addServers(resolver, 0, 4);
  resolver.clientSentData(clientId(3));
  resolver.settleByGuess();
  EXPECT_EQ(resolver.clientFlow(clientId(3)), Flow::Upload);
  EXPECT_EQ(resolver.clientFlow(clientId(0)), Flow::Upload);
  EXPECT_EQ(resolver.clientFlow(clientId(1)), Flow::Download);
  EXPECT_EQ(resolver.clientFlow(clientId(2)), Flow::Download);
}

TEST(RoleResolverTest, SettleByGuessPairsWhatExistsAndTheRestLater) {
  RoleResolver resolver(2, 2);
  addClients(resolver, {0, 1, 2, 3});
  addServers(resolver, 0, 3);
  std::vector<Pairing> pairings = resolver.settleByGuess();
  EXPECT_EQ(pairings.size(), 3U);
  resolver.addServerStream(serverId(3));
  EXPECT_TRUE(resolver.takeSettled().empty());  // a guessed flow is never certain
  collect(pairings, resolver.settleByGuess());
  EXPECT_EQ(checkPairedByCreationOrder(pairings, 2, 2, /*expect_guessed=*/true), "");
  EXPECT_TRUE(resolver.allPaired());
}

TEST(RoleResolverTest, CertainFlowPairedEarlyByGuessCompletesByItself) {
  RoleResolver resolver(4, 0);
  addClients(resolver, {3, 1, 0, 2});
  addServers(resolver, 0, 2);
  std::vector<Pairing> pairings = resolver.settleByGuess();
  EXPECT_EQ(pairings.size(), 2U);
  addServers(resolver, 2, 2);
  collect(pairings, resolver.takeSettled());
  EXPECT_EQ(checkPairedByCreationOrder(pairings, 4, 0), "");
}

TEST(RoleResolverTest, DataOverridesAnUnpairedGuess) {
  RoleResolver resolver(1, 1);
  // The receiver C1 has the lower port, so the guess gets both roles wrong.
  resolver.addClientStream(clientId(0), 50001);
  resolver.addClientStream(clientId(1), 50000);
  EXPECT_TRUE(resolver.settleByGuess().empty());  // no backend yet
  EXPECT_EQ(resolver.clientFlow(clientId(1)), Flow::Upload);
  resolver.clientSentData(clientId(0));
  EXPECT_EQ(resolver.clientFlow(clientId(0)), Flow::Upload);
  EXPECT_EQ(resolver.clientFlow(clientId(1)), Flow::Download);
  addServers(resolver, 0, 2);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 1, 1), "");
}

TEST(RoleResolverTest, RoleByteOutranksAnUnpairedGuess) {
  RoleResolver resolver(1, 1);
  resolver.addClientStream(clientId(1), portOf(kFirstPort, 1));
  EXPECT_TRUE(resolver.settleByGuess().empty());  // no backend yet
  EXPECT_EQ(resolver.clientFlow(clientId(1)), Flow::Upload);
  resolver.addClientStream(clientId(0), portOf(kFirstPort, 0), RoleByte{Flow::Upload, 0});
  EXPECT_EQ(resolver.clientFlow(clientId(0)), Flow::Upload);
  EXPECT_EQ(resolver.clientFlow(clientId(1)), Flow::Download);
  addServers(resolver, 0, 2);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 1, 1), "");
}

TEST(RoleResolverTest, DataOnALateStreamOutranksGuessesThatFilledTheUploads) {
  RoleResolver resolver(1, 1);
  resolver.addClientStream(clientId(1), portOf(kFirstPort, 1));
  resolver.settleByGuess();
  resolver.addClientStream(clientId(0), portOf(kFirstPort, 0));
  // Counting from the guess makes C0 a receiver, but only as a guess.
  EXPECT_EQ(resolver.clientFlow(clientId(0)), Flow::Download);
  resolver.clientSentData(clientId(0));
  EXPECT_EQ(resolver.clientFlow(clientId(0)), Flow::Upload);
  EXPECT_EQ(resolver.clientFlow(clientId(1)), Flow::Download);
  addServers(resolver, 0, 2);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 1, 1), "");
}

TEST(RoleResolverTest, SettleByGuessWithMissingClientStreamsPairsTheArrivedOnes) {
  RoleResolver resolver(1, 1);
  addClients(resolver, {0});
  addServers(resolver, 0, 1);
  const std::vector<Pairing> pairings = resolver.settleByGuess();
  ASSERT_EQ(pairings.size(), 1U);
  EXPECT_EQ(pairings[0].client, clientId(0));
  EXPECT_EQ(pairings[0].server, serverId(0));
  EXPECT_TRUE(pairings[0].guessed);
  EXPECT_FALSE(resolver.allPaired());
}

// --- Defensive behaviour ---

TEST(RoleResolverTest, ExtraAndDuplicateStreamsAreIgnored) {
  RoleResolver resolver(1, 0);
  resolver.addClientStream(clientId(0), kFirstPort);
  resolver.addClientStream(clientId(0), kFirstPort);
  resolver.addClientStream(clientId(1), portOf(kFirstPort, 1));
  resolver.addServerStream(serverId(0));
  resolver.addServerStream(serverId(0));
  resolver.addServerStream(serverId(1));
  EXPECT_EQ(resolver.clientFlow(clientId(1)), std::nullopt);
  EXPECT_EQ(resolver.serverFlow(serverId(1)), std::nullopt);
  EXPECT_EQ(checkPairedByCreationOrder(resolver.takeSettled(), 1, 0), "");
  EXPECT_TRUE(resolver.allPaired());
}

TEST(RoleResolverTest, UnknownIdsAreIgnored) {
  RoleResolver resolver(1, 1);
  resolver.clientSentData(clientId(0));  // before the stream was added
  addClients(resolver, {0, 1});
  EXPECT_EQ(resolver.clientFlow(clientId(0)), std::nullopt);
  resolver.clientSentData(clientId(9));
  EXPECT_EQ(resolver.clientFlow(clientId(9)), std::nullopt);
  EXPECT_TRUE(resolver.takeSettled().empty());
}

TEST(RoleResolverTest, NegativeCountsMeanNoStreams) {
  RoleResolver resolver(-1, -3);
  resolver.addClientStream(clientId(0), kFirstPort);
  resolver.addServerStream(serverId(0));
  EXPECT_TRUE(resolver.allClientStreamsArrived());
  EXPECT_TRUE(resolver.allPaired());
  EXPECT_TRUE(resolver.takeSettled().empty());
  EXPECT_TRUE(resolver.settleByGuess().empty());
}

TEST(RoleResolverTest, RandomOperationSequencesKeepPairingsConsistent) {
  std::mt19937 random(20290);  // fixed seed: reproducible
  for (int round = 0; round < 3000; ++round) {
    const int uploads = static_cast<int>(random() % 4);
    const int downloads = static_cast<int>(random() % 4);
    const int total = uploads + downloads;
    RoleResolver resolver(uploads, downloads);
    std::vector<Pairing> pairings;
    const int operations = static_cast<int>(random() % 40);
    for (int op = 0; op < operations; ++op) {
      // Ids and indexes deliberately range past the stream counts.
      const int k = static_cast<int>(random() % static_cast<unsigned>(total + 2));
      switch (random() % 6) {
        case 0: {
          std::optional<RoleByte> role_byte;
          if (random() % 2 == 0) {
            role_byte =
                decodeRoleByte(static_cast<std::uint8_t>(random() % 4 + (random() % 2) * 0x80));
          }
          resolver.addClientStream(clientId(k), static_cast<std::uint16_t>(random()), role_byte);
          break;
        }
        case 1:
          resolver.addServerStream(serverId(k));
          break;
        case 2:
          resolver.clientSentData(clientId(k));
          break;
        case 3:
          resolver.serverSentData(serverId(k));
          break;
        case 4:
          collect(pairings, resolver.settleByGuess());
          break;
        default:
          collect(pairings, resolver.takeSettled());
          break;
      }
    }
    collect(pairings, resolver.settleByGuess());
    std::set<StreamId> clients;
    std::set<StreamId> servers;
    for (const Pairing& pairing : pairings) {
      ASSERT_TRUE(clients.insert(pairing.client).second) << "round " << round;
      ASSERT_TRUE(servers.insert(pairing.server).second) << "round " << round;
      ASSERT_EQ(resolver.clientFlow(pairing.client), pairing.flow) << "round " << round;
      ASSERT_EQ(resolver.serverFlow(pairing.server), pairing.flow) << "round " << round;
    }
    ASSERT_LE(pairings.size(), static_cast<std::size_t>(total));
    ASSERT_EQ(resolver.allPaired(), pairings.size() == static_cast<std::size_t>(total))
        << "round " << round;
    if (resolver.allClientStreamsArrived() && resolver.allServerStreamsArrived()) {
      ASSERT_TRUE(resolver.allPaired()) << "round " << round;
    }
    ASSERT_LE(resolver.repairedRoles(), total);
    ASSERT_LE(resolver.misorderedArrivals(), total);
  }
}

}  // namespace
}  // namespace iperf3proxy::roles
