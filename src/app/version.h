#pragma once

namespace iperf3proxy::app {

inline constexpr const char* kVersion = "0.1.0";

}  // namespace iperf3proxy::app
