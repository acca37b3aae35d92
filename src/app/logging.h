#pragma once

#include <string>

namespace iperf3proxy::app {

// Sets up the process logger on stderr and routes libevent's own warnings into it.
void setUpLogging(const std::string& level);

}  // namespace iperf3proxy::app
