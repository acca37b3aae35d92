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

  // Right after start(): whether the server listens yet, or exited. iperf3 checks some options
  // as it parses them and others only when it sets up (CPU affinity, keys, its listener): one
  // that listens has taken them all. One that exited is not restarted; startupOutput() has its
  // words.
  enum class Startup { Waiting, Listening, Exited };
  Startup checkStartup();

  const std::string& startupOutput() const { return startup_output_; }

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
  std::string startup_output_;  // its output until it first listens (bounded)
  bool listened_ = false;
  std::unique_ptr<ev::IoEvent> output_event_;
  ev::Timer restart_;
};

// Finds an executable: a path with a slash is taken as is, a bare name is looked up in PATH.
std::optional<std::string> findExecutable(const std::string& name);

// Why iperf3 would not start, from its output: its own lines up to its usage text, joined
// ("iperf3: parameter error - some option you are trying to set is client only").
std::string iperf3StartupError(const std::string& output);

// Whether /proc/PID/net/tcp (the network namespace of PID) shows a listener on 127.0.0.1:PORT.
// nullopt when it cannot be read.
std::optional<bool> loopbackListening(pid_t pid, std::uint16_t port);

}  // namespace iperf3proxy::proxy
