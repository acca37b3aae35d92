#include "proto/cookie.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>

namespace iperf3proxy::proto {
namespace {

using Bytes = std::vector<std::uint8_t>;

constexpr std::string_view kCookieText = "ymz3xjdmdsi2cnqgnh6gwl7t4ab5vbvkqc2e";  // 36 characters

Bytes toBytes(std::string_view text) {
  return Bytes(text.begin(), text.end());
}

Bytes cookieBytes(std::string_view text = kCookieText) {
  Bytes bytes = toBytes(text);
  bytes.push_back(0);
  return bytes;
}

TEST(CookieTest, ParsesARealCookie) {
  ASSERT_EQ(kCookieText.size(), 36u);
  const Bytes bytes = cookieBytes();
  EXPECT_EQ(checkCookie(bytes), CookieDefect::None);
  const auto cookie = Cookie::parse(bytes);
  ASSERT_TRUE(cookie.has_value());
  EXPECT_EQ(cookie->text(), kCookieText);
  EXPECT_EQ(cookie->shortForm(), "ymz3xjdm");
  EXPECT_EQ(Bytes(cookie->bytes().begin(), cookie->bytes().end()), bytes);
}

TEST(CookieTest, WholeAlphabetIsAccepted) {
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  for (const char c : alphabet) {
    const Bytes bytes = cookieBytes(std::string(36, c));
    EXPECT_EQ(checkCookie(bytes), CookieDefect::None) << c;
  }
}

TEST(CookieTest, EveryOtherCharacterIsRefused) {
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  for (int value = 0; value < 256; ++value) {
    const auto c = static_cast<char>(value);
    if (alphabet.find(c) != std::string::npos) {
      continue;
    }
    for (const std::size_t position : {std::size_t{0}, std::size_t{17}, std::size_t{35}}) {
      Bytes bytes = cookieBytes();
      bytes[position] = static_cast<std::uint8_t>(value);
      EXPECT_EQ(checkCookie(bytes), CookieDefect::BadCharacter) << value << " at " << position;
      EXPECT_FALSE(Cookie::parse(bytes).has_value());
      EXPECT_EQ(firstInvalidCookieByte(bytes), position);
    }
  }
}

TEST(CookieTest, MissingNul) {
  Bytes bytes = cookieBytes();
  bytes[36] = 'a';
  EXPECT_EQ(checkCookie(bytes), CookieDefect::MissingNul);
  EXPECT_EQ(firstInvalidCookieByte(bytes), 36u);
  EXPECT_FALSE(Cookie::parse(bytes).has_value());
}

TEST(CookieTest, WrongLength) {
  EXPECT_EQ(checkCookie(Bytes{}), CookieDefect::WrongLength);
  Bytes shorter = cookieBytes();
  shorter.pop_back();
  EXPECT_EQ(checkCookie(shorter), CookieDefect::WrongLength);  // 36 characters, no NUL yet
  Bytes longer = cookieBytes();
  longer.push_back(0);
  EXPECT_EQ(checkCookie(longer), CookieDefect::WrongLength);
  EXPECT_FALSE(Cookie::parse(longer).has_value());
  EXPECT_FALSE(Cookie::parse(shorter).has_value());
}

TEST(CookieTest, PrefixOfAValidCookieHasNoInvalidByte) {
  const Bytes bytes = cookieBytes();
  for (std::size_t size = 0; size <= bytes.size(); ++size) {
    EXPECT_FALSE(firstInvalidCookieByte(std::span(bytes.data(), size)).has_value()) << size;
  }
  const Bytes garbage = toBytes("GET / HTTP/1.1\r\n");
  EXPECT_EQ(firstInvalidCookieByte(garbage), 0u);
}

TEST(CookieTest, DefectNames) {
  EXPECT_EQ(cookieDefectName(CookieDefect::None), "valid");
  EXPECT_NE(cookieDefectName(CookieDefect::WrongLength),
            cookieDefectName(CookieDefect::MissingNul));
  EXPECT_NE(cookieDefectName(CookieDefect::BadCharacter), "unknown");
}

TEST(CookieTest, EqualityAndHash) {
  const auto a = Cookie::parse(cookieBytes());
  const auto b = Cookie::parse(cookieBytes());
  const auto c = Cookie::parse(cookieBytes("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"));
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
  EXPECT_EQ(CookieHash{}(*a), CookieHash{}(*b));
  std::unordered_set<Cookie, CookieHash> set{*a, *b, *c};
  EXPECT_EQ(set.size(), 2u);
}

}  // namespace
}  // namespace iperf3proxy::proto
