#pragma once

#include <string>
#include <string_view>

namespace iperf3proxy::app {

// Tells systemd how the service is doing (Type=notify units): "READY=1" once the proxy listens,
// "STOPPING=1" when it starts draining. The protocol is one datagram of "KEY=VALUE" lines to the
// AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace); see
// sd_notify(3). Written here rather than linking libsystemd for one sendto().
//
// Without NOTIFY_SOCKET (not started by systemd) it does nothing and returns true. On failure it
// returns false with the reason in `error`; the caller logs it and carries on.
bool notifyServiceManager(std::string_view state, std::string* error);

}  // namespace iperf3proxy::app
