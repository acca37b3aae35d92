#include "proto/cookie.h"

#include <algorithm>
#include <functional>

namespace iperf3proxy::proto {
namespace {

bool isCookieCharacter(std::uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
}

}  // namespace

std::optional<std::size_t> firstInvalidCookieByte(std::span<const std::uint8_t> prefix) {
  const std::size_t length = std::min(prefix.size(), kCookieSize);
  for (std::size_t i = 0; i < length; ++i) {
    const bool valid = i + 1 == kCookieSize ? prefix[i] == 0 : isCookieCharacter(prefix[i]);
    if (!valid) {
      return i;
    }
  }
  return std::nullopt;
}

CookieDefect checkCookie(std::span<const std::uint8_t> bytes) {
  if (const auto bad = firstInvalidCookieByte(bytes)) {
    return *bad + 1 == kCookieSize ? CookieDefect::MissingNul : CookieDefect::BadCharacter;
  }
  if (bytes.size() != kCookieSize) {
    return CookieDefect::WrongLength;
  }
  return CookieDefect::None;
}

std::string_view cookieDefectName(CookieDefect defect) {
  switch (defect) {
    case CookieDefect::None:
      return "valid";
    case CookieDefect::WrongLength:
      return "wrong length";
    case CookieDefect::BadCharacter:
      return "character outside the iperf3 cookie alphabet";
    case CookieDefect::MissingNul:
      return "no NUL terminator";
  }
  return "unknown";
}

std::optional<Cookie> Cookie::parse(std::span<const std::uint8_t> bytes) {
  if (checkCookie(bytes) != CookieDefect::None) {
    return std::nullopt;
  }
  Bytes copy{};
  std::copy(bytes.begin(), bytes.end(), copy.begin());
  return Cookie(copy);
}

std::string_view Cookie::text() const {
  return {reinterpret_cast<const char*>(bytes_.data()), kCookieSize - 1};
}

std::size_t CookieHash::operator()(const Cookie& cookie) const noexcept {
  return std::hash<std::string_view>{}(cookie.text());
}

}  // namespace iperf3proxy::proto
