#include "proxy/address_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>

namespace iperf3proxy::proxy {
namespace {

constexpr int kIpv4MappedPrefix = 96;

// The first `bits` bits of `a` and `b` agree.
bool samePrefix(const IpBytes& a, const IpBytes& b, int bits) {
  const auto whole = static_cast<std::size_t>(bits / 8);
  if (std::memcmp(a.data(), b.data(), whole) != 0) {
    return false;
  }
  const int rest = bits % 8;
  if (rest == 0) {
    return true;
  }
  const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

// 'text', for a message. Built by appending: GCC 12 at -O3 reports a false -Wrestrict for
// `"'" + std::string(...)`, a known false positive of its string inlining.
std::string quoted(std::string_view text) {
  std::string out = "'";
  out.append(text);
  out += '\'';
  return out;
}

}  // namespace

std::optional<IpBytes> ipBytesOf(const sockaddr_storage& address) {
  IpBytes bytes{};
  if (address.ss_family == AF_INET) {
    sockaddr_in v4{};
    std::memcpy(&v4, &address, sizeof(v4));
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    std::memcpy(bytes.data() + 12, &v4.sin_addr, 4);
    return bytes;
  }
  if (address.ss_family == AF_INET6) {
    sockaddr_in6 v6{};
    std::memcpy(&v6, &address, sizeof(v6));
    std::memcpy(bytes.data(), &v6.sin6_addr, 16);
    return bytes;
  }
  return std::nullopt;
}

bool Cidr::contains(const IpBytes& address) const {
  return samePrefix(network, address, prefix);
}

std::variant<Cidr, CidrError> parseCidr(std::string_view text) {
  const std::size_t slash = text.find('/');
  const std::string host(text.substr(0, slash));
  Cidr block;
  block.text = std::string(text);
  int width = 0;
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    block.network[10] = 0xff;
    block.network[11] = 0xff;
    std::memcpy(block.network.data() + 12, &v4, 4);
    width = 32;
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    std::memcpy(block.network.data(), &v6, 16);
    width = 128;
  } else {
    return CidrError{quoted(text) +
                     " is not an address block (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)"};
  }
  int bits = width;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), bits);
    if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() ||
        bits < 0 || bits > width) {
      return CidrError{quoted(text) + ": the prefix length must be 0 to " + std::to_string(width)};
    }
  }
  block.prefix = bits + (width == 32 ? kIpv4MappedPrefix : 0);
  IpBytes masked{};
  for (int bit = 0; bit < block.prefix; ++bit) {
    const auto byte = static_cast<std::size_t>(bit / 8);
    masked[byte] =
        static_cast<std::uint8_t>(masked[byte] | (block.network[byte] & (0x80 >> (bit % 8))));
  }
  if (masked != block.network) {
    return CidrError{quoted(text) + " has address bits set beyond its /" + std::to_string(bits) +
                     " (a typo for another block?)"};
  }
  return block;
}

AddressPolicy::Verdict AddressPolicy::check(const IpBytes& address) const {
  const Cidr* best_allow = nullptr;
  const Cidr* best_deny = nullptr;
  for (const auto& block : allowed_) {
    if (block.contains(address) && (best_allow == nullptr || block.prefix > best_allow->prefix)) {
      best_allow = &block;
    }
  }
  for (const auto& block : denied_) {
    if (block.contains(address) && (best_deny == nullptr || block.prefix > best_deny->prefix)) {
      best_deny = &block;
    }
  }
  if (best_deny != nullptr && (best_allow == nullptr || best_deny->prefix >= best_allow->prefix)) {
    return {false, "--deny " + best_deny->text};
  }
  if (best_allow != nullptr) {
    return {true, "--allow " + best_allow->text};
  }
  if (!allowed_.empty()) {
    return {false, "no --allow holds it"};
  }
  return {true, ""};
}

}  // namespace iperf3proxy::proxy
