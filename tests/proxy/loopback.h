#pragma once

#include <utility>

#include "net/unique_fd.h"

namespace iperf3proxy::proxy::testing {

// A connected pair of TCP sockets over loopback: {outer (blocking, the test's peer), inner
// (non-blocking, the proxy's side)}.
std::pair<net::UniqueFd, net::UniqueFd> tcpPair();

}  // namespace iperf3proxy::proxy::testing
