#pragma once

#include <cstdint>

namespace iperf3proxy::app {

// What the proxy's configuration asks of the system, for the checks at startup.
struct ResourceNeeds {
  int max_tests = 0;    // --max-tests
  int max_pending = 0;  // --max-pending: connections that hold an fd before they are a test
  int threads = 1;      // event loops, a few fds each
  int embedded_servers = 0;
  int pipe_size = 0;  // bytes the data path asks F_SETPIPE_SZ for
};

// At startup, before any thread: raises the open-files limit (RLIMIT_NOFILE) to its hard limit
// and logs what is available; checks that a pipe gets the size the data path asks for (without
// CAP_SYS_RESOURCE, e.g. in a container, the kernel may give less) and warns once if not; warns
// when --max-tests tests cannot all have their file descriptors.
void prepareResources(const ResourceNeeds& needs);

// TCP data connections each of `max_tests` tests can have within `fd_limit` file descriptors,
// after what the proxy needs besides tests. Per running test: 2 fds for the control connection
// (client and server side) and 6 per TCP data connection (two sockets, two pipes); a UDP flow
// takes 2. Negative: not even the control connections fit.
std::int64_t dataConnectionsPerTest(std::uint64_t fd_limit, const ResourceNeeds& needs);

}  // namespace iperf3proxy::app
