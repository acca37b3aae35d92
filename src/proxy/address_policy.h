#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace iperf3proxy::proxy {

// An IPv6 address, or an IPv4 one as IPv4-mapped IPv6 (::ffff:a.b.c.d): a dual-stack listener
// shows IPv4 clients that way, so one form matches both.
using IpBytes = std::array<std::uint8_t, 16>;

// The address of a socket address in that form; nullopt for families other than IPv4 and IPv6.
std::optional<IpBytes> ipBytesOf(const sockaddr_storage& address);

// An address block, "10.0.0.0/8", "2001:db8::/32", or one address ("192.0.2.7", "::1").
struct Cidr {
  IpBytes network{};
  int prefix = 0;    // bits, of the 128 (an IPv4 block's is 96 + its own)
  std::string text;  // as written, for the log

  bool contains(const IpBytes& address) const;
};

// The text is not an address block; the reason.
struct CidrError {
  std::string message;
};

// Bits set beyond the prefix ("10.0.0.1/8") are refused: they are almost always a typo for
// another block, and silently widening it would let in more than the operator meant.
std::variant<Cidr, CidrError> parseCidr(std::string_view text);

// Which client addresses may use the proxy (--allow, --deny; checked at accept, before a byte
// is read). The most specific block that holds the address decides; on a tie --deny wins. An
// address no block holds is allowed, unless there is an --allow at all: then only what is
// allowed is. So `--allow 10.0.0.0/8 --deny 10.9.0.0/16` lets in 10/8 but not 10.9/16 (and
// nothing else), `--deny 10.9.0.0/16` alone everything but 10.9/16. Pure.
class AddressPolicy {
 public:
  void allow(Cidr block) { allowed_.push_back(std::move(block)); }

  void deny(Cidr block) { denied_.push_back(std::move(block)); }

  bool empty() const { return allowed_.empty() && denied_.empty(); }

  struct Verdict {
    bool allowed = true;
    // The block that decided, for the log: "--deny 10.9.0.0/16", or "no --allow holds it".
    std::string why;
  };

  Verdict check(const IpBytes& address) const;

 private:
  std::vector<Cidr> allowed_;
  std::vector<Cidr> denied_;
};

}  // namespace iperf3proxy::proxy
