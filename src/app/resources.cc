#include "app/resources.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"

namespace iperf3proxy::app {
namespace {

// File descriptors of a test's control connection, and of each TCP data connection.
constexpr std::int64_t kControlFds = 2;
constexpr std::int64_t kTcpConnectionFds = 6;
// Besides tests and pending connections: stdio, listeners (TCP and UDP per address), the metrics
// endpoint and its scrapers, the log file, libevent's internals.
constexpr std::int64_t kBaseFds = 64;
constexpr std::int64_t kFdsPerLoop = 4;      // epoll, eventfd, signal pipe, spare
constexpr std::int64_t kFdsPerEmbedded = 2;  // its output pipe, a spare
// A --bidir test with one stream each way: the smallest test a slot should hold.
constexpr std::int64_t kSmallestBidirTest = 2;

// Returns the open-files limit after raising it, and logs.
std::uint64_t raiseFileLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == -1) {
    spdlog::warn("getrlimit(RLIMIT_NOFILE): {}", net::errnoText(errno));
    return 1024;
  }
  const rlim_t before = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) == -1) {
      spdlog::warn("cannot raise the open-files limit from {} to {}: {}", before, limit.rlim_max,
                   net::errnoText(errno));
      return before;
    }
  }
  if (limit.rlim_cur != before) {
    spdlog::info("open files: {} (raised from {}; hard limit)", limit.rlim_cur, before);
  } else {
    spdlog::info("open files: {} (the hard limit)", limit.rlim_cur);
  }
  return limit.rlim_cur;
}

void checkPipeSize(int asked) {
  int fds[2] = {-1, -1};
  if (::pipe2(fds, O_CLOEXEC) == -1) {
    spdlog::warn("cannot create a pipe to check its size: {}", net::errnoText(errno));
    return;
  }
  const int set = ::fcntl(fds[1], F_SETPIPE_SZ, asked);
  const int why = set == -1 ? errno : 0;
  const int got = ::fcntl(fds[1], F_GETPIPE_SZ);
  (void)::close(fds[0]);
  (void)::close(fds[1]);
  if (got >= asked) {
    return;
  }
  // Above fs.pipe-max-size (1 MiB by default), or beyond the per-user pipe limits, only a
  // process with CAP_SYS_RESOURCE gets what it asks for.
  spdlog::warn(
      "pipes get {} KiB instead of the {} KiB the data path asks for ({}): test data still "
      "flows, with more system calls per byte. Check fs.pipe-max-size and "
      "fs.pipe-user-pages-soft, or give the proxy CAP_SYS_RESOURCE",
      got / 1024, asked / 1024, why != 0 ? net::errnoText(why) : "the kernel gave less");
}

}  // namespace

std::int64_t dataConnectionsPerTest(std::uint64_t fd_limit, const ResourceNeeds& needs) {
  const std::int64_t reserved = kBaseFds + needs.max_pending + kFdsPerLoop * (needs.threads + 1) +
                                kFdsPerEmbedded * needs.embedded_servers;
  const std::int64_t limit =
      static_cast<std::int64_t>(std::min<std::uint64_t>(fd_limit, INT64_MAX / 2));
  const std::int64_t per_test = (limit - reserved) / std::max(1, needs.max_tests);
  if (per_test < kControlFds) {
    return -1;
  }
  return (per_test - kControlFds) / kTcpConnectionFds;
}

void prepareResources(const ResourceNeeds& needs) {
  const std::uint64_t files = raiseFileLimit();
  const std::int64_t connections = dataConnectionsPerTest(files, needs);
  if (connections < kSmallestBidirTest) {
    spdlog::warn(
        "{} open files are too few for --max-tests {}: after --max-pending {} they leave each "
        "test room for {} TCP data connections, and a --bidir test needs 2 (a test takes 2 fds "
        "for its control connection, 6 per TCP data connection, 2 per UDP flow). Raise the "
        "limit (ulimit -n, systemd LimitNOFILE=, docker run --ulimit nofile=) or lower "
        "--max-tests",
        files, needs.max_tests, needs.max_pending, std::max<std::int64_t>(connections, 0));
  } else {
    spdlog::info("room for --max-tests {} tests of up to {} TCP data connections each",
                 needs.max_tests, connections);
  }
  checkPipeSize(needs.pipe_size);
}

}  // namespace iperf3proxy::app
