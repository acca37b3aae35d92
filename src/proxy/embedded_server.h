#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/unique_fd.h"

namespace iperf3proxy::proxy {

// Runs `iperf3 -s` on a free loopback port as the backend when none is given, restarts it when
// it dies, and stops it on exit. Its output is passed to the log at debug level.
class EmbeddedServer {
 public:
  EmbeddedServer(ev::EventLoop& loop, std::string iperf3_path);
  ~EmbeddedServer();
  EmbeddedServer(const EmbeddedServer&) = delete;
  EmbeddedServer& operator=(const EmbeddedServer&) = delete;

  // Checks the binary and starts the server. Returns false with `error` set if it cannot.
  bool start(std::string* error);

  // Stops the server (SIGTERM, then SIGKILL) and does not restart it.
  void stop();

  // Where the server listens; empty while it is down.
  std::optional<net::Address> address() const;

  // Called by the owner when SIGCHLD arrives.
  void onChildSignal();

 private:
  bool spawn(std::string* error);
  void onOutput();

  ev::EventLoop& loop_;
  std::string iperf3_path_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool stopping_ = false;
  int quick_deaths_ = 0;
  long long started_ms_ = 0;
  net::UniqueFd output_;
  std::string partial_line_;
  std::unique_ptr<ev::IoEvent> output_event_;
  ev::Timer restart_;
};

// Finds an executable: a path with a slash is taken as is, a bare name is looked up in PATH.
std::optional<std::string> findExecutable(const std::string& name);

}  // namespace iperf3proxy::proxy
