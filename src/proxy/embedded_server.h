#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/unique_fd.h"

namespace iperf3proxy::proxy {

// Runs one `iperf3 -s` on a free loopback port as a backend (--servers N runs N of them),
// restarts it when it dies, and stops it on exit. Its output is passed to the log at debug level.
class EmbeddedServer {
 public:
  struct Callbacks {
    // The server (re)started and listens (or is about to) on this address.
    std::function<void(const net::Address&)> on_up;
    // The server exited; a restart is scheduled unless it is being stopped.
    std::function<void()> on_down;
  };

  EmbeddedServer(ev::EventLoop& loop,
                 std::string name,  // for logs, e.g. "embedded #1"
                 std::string iperf3_path,
                 std::vector<std::string> extra_args,  // passed to iperf3 -s
                 Callbacks callbacks);
  ~EmbeddedServer();
  EmbeddedServer(const EmbeddedServer&) = delete;
  EmbeddedServer& operator=(const EmbeddedServer&) = delete;

  // Checks the binary and starts the server. Returns false with `error` set if it cannot.
  bool start(std::string* error);

  // Stops the server (SIGTERM, then SIGKILL) and does not restart it.
  void stop();

  // Asks the server to stop (SIGTERM) without waiting; stop() then waits. Stopping many servers
  // this way takes one wait instead of one each.
  void signalStop();

  // Kills a server that looks hung; it is restarted like one that died.
  void restart();

  const std::string& name() const { return name_; }

  // Where the server listens; empty while it is down.
  std::optional<net::Address> address() const;

  // Called by the owner when SIGCHLD arrives.
  void onChildSignal();

 private:
  bool spawn(std::string* error);
  void onOutput();

  ev::EventLoop& loop_;
  std::string name_;
  std::string iperf3_path_;
  std::vector<std::string> extra_args_;
  Callbacks callbacks_;
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
