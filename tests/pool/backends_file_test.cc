// The --backends-file format.

#include "pool/backends_file.h"

#include <gtest/gtest.h>

namespace iperf3proxy::pool {
namespace {

TEST(BackendsFile, OneBackendPerLineWithCommentsAndBlankLines) {
  const auto parsed = parseBackendsFile(
      "# the lab's servers\n"
      "10.0.0.1:5201\n"
      "\n"
      "  iperf-b.example:5202   # second rack\r\n"
      "[2001:db8::7]:5201\n"
      "10.0.0.1:5201\n");
  ASSERT_TRUE(std::holds_alternative<std::vector<std::string>>(parsed));
  EXPECT_EQ(
      std::get<std::vector<std::string>>(parsed),
      (std::vector<std::string>{"10.0.0.1:5201", "iperf-b.example:5202", "[2001:db8::7]:5201"}));
}

TEST(BackendsFile, AnEmptyFileIsAnEmptyPool) {
  const auto parsed = parseBackendsFile("# nothing yet\n\n");
  ASSERT_TRUE(std::holds_alternative<std::vector<std::string>>(parsed));
  EXPECT_TRUE(std::get<std::vector<std::string>>(parsed).empty());
}

TEST(BackendsFile, AMalformedLineIsNamedByNumber) {
  for (const char* bad : {"10.0.0.1", "10.0.0.1:", ":5201", "10.0.0.1:70000", "2001:db8::7:5201",
                          "a b:5201", "10.0.0.1:52x1"}) {
    const auto parsed = parseBackendsFile(std::string("10.0.0.2:5201\n") + bad + "\n");
    ASSERT_TRUE(std::holds_alternative<BackendsFileError>(parsed)) << bad;
    EXPECT_EQ(std::get<BackendsFileError>(parsed).line, 2) << bad;
  }
}

}  // namespace
}  // namespace iperf3proxy::pool
