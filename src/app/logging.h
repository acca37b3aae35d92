#pragma once

#include <string>

#include "app/service_options.h"

namespace iperf3proxy::app {

// Sets up the process logger: text or JSON lines (--log-format), on stderr or appended to
// --logfile; and routes libevent's own warnings into it. False with `error` set if the log file
// cannot be opened (nothing has been logged then: the caller tells stderr).
bool setUpLogging(const std::string& level, const ServiceOptions& options, std::string* error);

// SIGHUP: reopens --logfile under its name, so that the lines after a logrotate go to the new
// file. If it cannot, the old file stays in use and an error says why. Without --logfile,
// nothing to do.
void reopenLogFile();

// While the proxy starts, error lines also go, bare, to `fd`: the terminal when the log goes to a
// file, or the pipe to the process that started a daemon (app/daemon.h). Ends with
// endStartupReport() (ready); `fd` stays the caller's.
void reportStartupErrorsTo(int fd);
void endStartupReport();

}  // namespace iperf3proxy::app
