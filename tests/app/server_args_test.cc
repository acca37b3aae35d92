// Which iperf3 server options the proxy keeps to itself (the words after `--`).

#include "app/server_args.h"

#include <gtest/gtest.h>

namespace iperf3proxy::app {
namespace {

std::optional<std::string> check(std::vector<std::string> args) {
  return findReservedServerOption(args);
}

TEST(ServerArgs, WhatAServerMayBeGivenPassesThrough) {
  EXPECT_EQ(check({}), std::nullopt);
  EXPECT_EQ(check({"--rsa-private-key-path",
                   "k.pem",
                   "--authorized-users-path",
                   "u.csv",
                   "--server-bitrate-limit",
                   "100M/5",
                   "-A",
                   "1",
                   "--rcv-timeout",
                   "5000",
                   "--server-max-duration",
                   "60",
                   "-V",
                   "--forceflush",
                   "--time-skew-threshold",
                   "10",
                   "--idle-timeout",
                   "30",
                   "-d",
                   "--cntl-ka=10/5/3",
                   "-J"}),
            std::nullopt);
}

TEST(ServerArgs, TheProxysOwnOptionsAreRefusedByAnyName) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"-s"},
                                             {"--server"},
                                             {"-c", "host"},
                                             {"-p", "5201"},
                                             {"-p5201"},
                                             {"--port=5201"},
                                             {"--port", "5201"},
                                             {"-B", "0.0.0.0"},
                                             {"--bind-dev", "eth0"},
                                             {"-4"},
                                             {"--version6"},
                                             {"-D"},
                                             {"--daemon"},
                                             {"-1"},
                                             {"--one-off"},
                                             {"-I", "/run/x.pid"},
                                             {"--logfile", "/tmp/x"},
                                             {"-h"},
                                             {"-v"}}) {
    const auto refusal = check(args);
    ASSERT_TRUE(refusal.has_value()) << args[0];
    EXPECT_NE(refusal->find("cannot be passed to the embedded iperf3 servers"), std::string::npos)
        << *refusal;
  }
}

TEST(ServerArgs, BundledShortOptionsAndAbbreviationsAsGetoptReadsThem) {
  EXPECT_NE(check({"-VD"}), std::nullopt);              // -V -D
  EXPECT_NE(check({"-Js"}), std::nullopt);              // -J -s
  EXPECT_NE(check({"--log", "/tmp/x"}), std::nullopt);  // --logfile
  EXPECT_NE(check({"--one"}), std::nullopt);            // --one-off
  EXPECT_NE(check({"--dae"}), std::nullopt);            // --daemon
  EXPECT_NE(check({"--bin", "x"}), std::nullopt);       // --bind or --bind-dev: both reserved
  // A value that happens to look like a reserved option is a value.
  EXPECT_EQ(check({"-A1"}), std::nullopt);  // CPU 1, not -A -1
  EXPECT_EQ(check({"-A", "-1"}), std::nullopt);
  EXPECT_EQ(check({"--authorized-users-path", "-s"}), std::nullopt);
  EXPECT_EQ(check({"-f", "-p"}), std::nullopt);
  // An ambiguous abbreviation with readings the proxy passes on is iperf3's to refuse.
  EXPECT_EQ(check({"--p"}), std::nullopt);  // --parallel, --port, --pidfile, --pacing-timer
  // After getopt's own `--`, nothing is an option.
  EXPECT_EQ(check({"--", "-s"}), std::nullopt);
  // Unknown options are iperf3's to refuse, when the proxy starts it.
  EXPECT_EQ(check({"--no-such-option"}), std::nullopt);
}

TEST(ServerArgs, TheMessageNamesTheOptionAsWritten) {
  const auto refusal = check({"-V", "--port=7"});
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->rfind("'--port=7' cannot be passed", 0), 0U) << *refusal;
}

}  // namespace
}  // namespace iperf3proxy::app
