// --allow / --deny: address blocks and which one decides.

#include "proxy/address_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include <gtest/gtest.h>

namespace iperf3proxy::proxy {
namespace {

Cidr block(std::string_view text) {
  auto parsed = parseCidr(text);
  EXPECT_TRUE(std::holds_alternative<Cidr>(parsed)) << text;
  return std::holds_alternative<Cidr>(parsed) ? std::get<Cidr>(parsed) : Cidr{};
}

// A client address as the listener shows it: IPv4 as a plain sockaddr_in, or, on the
// dual-stack listener, as IPv4-mapped IPv6.
IpBytes address(const char* text, bool mapped = false) {
  sockaddr_storage storage{};
  if (in_addr v4{}; ::inet_pton(AF_INET, text, &v4) == 1 && !mapped) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr = v4;
    std::memcpy(&storage, &sin, sizeof(sin));
  } else {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    const std::string v6 = mapped ? std::string("::ffff:") + text : text;
    EXPECT_EQ(::inet_pton(AF_INET6, v6.c_str(), &sin6.sin6_addr), 1) << text;
    std::memcpy(&storage, &sin6, sizeof(sin6));
  }
  return *ipBytesOf(storage);
}

TEST(Cidr, Ipv4AndIpv6BlocksAndSingleAddresses) {
  EXPECT_TRUE(block("10.0.0.0/8").contains(address("10.200.3.4")));
  EXPECT_FALSE(block("10.0.0.0/8").contains(address("11.0.0.1")));
  EXPECT_TRUE(block("192.0.2.7").contains(address("192.0.2.7")));
  EXPECT_FALSE(block("192.0.2.7").contains(address("192.0.2.8")));
  EXPECT_TRUE(block("2001:db8::/32").contains(address("2001:db8:1::5")));
  EXPECT_FALSE(block("2001:db8::/32").contains(address("2001:db9::5")));
  EXPECT_TRUE(block("0.0.0.0/0").contains(address("203.0.113.9")));
  EXPECT_FALSE(block("0.0.0.0/0").contains(address("2001:db8::1")));  // IPv4 only
  EXPECT_TRUE(block("::/0").contains(address("203.0.113.9")));        // everything
  EXPECT_TRUE(block("10.1.2.0/23").contains(address("10.1.3.255")));
  EXPECT_FALSE(block("10.1.2.0/23").contains(address("10.1.4.0")));
}

TEST(Cidr, AnIpv4ClientOnTheDualStackListenerMatchesIpv4Blocks) {
  EXPECT_TRUE(block("10.0.0.0/8").contains(address("10.9.8.7", /*mapped=*/true)));
  EXPECT_EQ(address("10.9.8.7", true), address("10.9.8.7"));
}

TEST(Cidr, MalformedBlocksAreRefused) {
  for (const char* bad : {"", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/-1", "10.0.0/8",
                          "10.0.0.0/8x", "host.example", "10.0.0.1/8", "2001:db8::1/32"}) {
    EXPECT_TRUE(std::holds_alternative<CidrError>(parseCidr(bad))) << bad;
  }
}

TEST(AddressPolicy, NoRulesAllowsEveryone) {
  const AddressPolicy policy;
  EXPECT_TRUE(policy.empty());
  EXPECT_TRUE(policy.check(address("203.0.113.9")).allowed);
}

TEST(AddressPolicy, DenyAloneShutsOutOnlyItsBlock) {
  AddressPolicy policy;
  policy.deny(block("10.9.0.0/16"));
  EXPECT_FALSE(policy.check(address("10.9.1.1")).allowed);
  EXPECT_EQ(policy.check(address("10.9.1.1")).why, "--deny 10.9.0.0/16");
  EXPECT_TRUE(policy.check(address("10.8.1.1")).allowed);
  EXPECT_TRUE(policy.check(address("2001:db8::1")).allowed);
}

TEST(AddressPolicy, AnyAllowLetsInOnlyWhatIsAllowed) {
  AddressPolicy policy;
  policy.allow(block("192.0.2.0/24"));
  EXPECT_TRUE(policy.check(address("192.0.2.200")).allowed);
  EXPECT_FALSE(policy.check(address("198.51.100.1")).allowed);
  EXPECT_EQ(policy.check(address("198.51.100.1")).why, "no --allow holds it");
  EXPECT_FALSE(policy.check(address("2001:db8::1")).allowed);
}

TEST(AddressPolicy, TheMostSpecificBlockDecidesWhateverTheOrder) {
  AddressPolicy policy;
  policy.deny(block("10.9.0.0/16"));
  policy.allow(block("10.0.0.0/8"));
  policy.allow(block("10.9.9.9"));
  EXPECT_TRUE(policy.check(address("10.1.1.1")).allowed);
  EXPECT_FALSE(policy.check(address("10.9.1.1")).allowed);
  EXPECT_TRUE(policy.check(address("10.9.9.9")).allowed);  // a /32 inside the denied /16
}

TEST(AddressPolicy, OnATieDenyWins) {
  AddressPolicy policy;
  policy.allow(block("10.0.0.0/8"));
  policy.deny(block("10.0.0.0/8"));
  EXPECT_FALSE(policy.check(address("10.1.1.1")).allowed);
}

}  // namespace
}  // namespace iperf3proxy::proxy
