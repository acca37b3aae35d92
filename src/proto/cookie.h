#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "proto/wire.h"

namespace iperf3proxy::proto {

// The 37-byte test identifier an iperf3 client sends first on the control connection and on
// every TCP data connection. It names a test, never a stream or a role.
class Cookie {
 public:
  using Bytes = std::array<std::uint8_t, kCookieSize>;

  // Accepts exactly what real clients generate: 36 characters of [a-z2-7] and a NUL. The server
  // itself does not check the alphabet, but no iperf3 client produces anything else, so anything
  // else is garbage or an attack and is refused before it reaches the server.
  static std::optional<Cookie> parse(std::span<const std::uint8_t> bytes);

  const Bytes& bytes() const { return bytes_; }

  // The 36 printable characters.
  std::string_view text() const;

  // First 8 characters: enough to tell tests apart in logs without printing the whole cookie.
  std::string_view shortForm() const { return text().substr(0, 8); }

  friend bool operator==(const Cookie&, const Cookie&) = default;

 private:
  explicit Cookie(const Bytes& bytes) : bytes_(bytes) {}

  Bytes bytes_{};
};

// Why a candidate cookie was refused; for the log line.
enum class CookieDefect { None, WrongLength, BadCharacter, MissingNul };

CookieDefect checkCookie(std::span<const std::uint8_t> bytes);

// For a cookie still arriving: the position of the first byte (among the first 37) that no real
// cookie could have there, so garbage is refused without waiting for the rest of it.
std::optional<std::size_t> firstInvalidCookieByte(std::span<const std::uint8_t> prefix);

std::string_view cookieDefectName(CookieDefect defect);

struct CookieHash {
  std::size_t operator()(const Cookie& cookie) const noexcept;
};

}  // namespace iperf3proxy::proto
