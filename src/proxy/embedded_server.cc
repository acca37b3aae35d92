#include "proxy/embedded_server.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <vector>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"

extern char** environ;

namespace iperf3proxy::proxy {
namespace {

constexpr long kRestartDelayMs = 500;
constexpr long kMaxRestartDelayMs = 10'000;
constexpr long long kQuickDeathMs = 2'000;

long long nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

net::Address loopback() {
  return *net::resolveHost("127.0.0.1", 0, nullptr);
}

}  // namespace

std::optional<std::string> findExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    return ::access(name.c_str(), X_OK) == 0 ? std::optional(name) : std::nullopt;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string dir = dirs.substr(start, end - start);
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return std::nullopt;
}

EmbeddedServer::EmbeddedServer(ev::EventLoop& loop,
                               std::string name,
                               std::string iperf3_path,
                               std::vector<std::string> extra_args,
                               Callbacks callbacks)
    : loop_(loop),
      name_(std::move(name)),
      iperf3_path_(std::move(iperf3_path)),
      extra_args_(std::move(extra_args)),
      callbacks_(std::move(callbacks)),
      restart_(loop, [this] {
        std::string error;
        if (!spawn(&error)) {
          spdlog::error("{} iperf3 server: {}", name_, error);
          restart_.armMs(kMaxRestartDelayMs);
        }
      }) {}

EmbeddedServer::~EmbeddedServer() {
  stop();
}

bool EmbeddedServer::start(std::string* error) {
  const auto found = findExecutable(iperf3_path_);
  if (!found) {
    *error = "iperf3 binary '" + iperf3_path_ +
             "' not found or not executable (install iperf3, or pass --iperf3 PATH or --backend "
             "HOST:PORT)";
    return false;
  }
  iperf3_path_ = *found;
  return spawn(error);
}

bool EmbeddedServer::spawn(std::string* error) {
  const auto port = net::pickFreePort(loopback());
  if (!port) {
    *error = "no free loopback port for the embedded iperf3 server";
    return false;
  }
  port_ = *port;
  int pipe_fds[2] = {-1, -1};
  if (::pipe2(pipe_fds, O_CLOEXEC) == -1) {
    *error = "pipe: " + net::errnoText(errno);
    return false;
  }
  net::UniqueFd read_end(pipe_fds[0]);
  net::UniqueFd write_end(pipe_fds[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDERR_FILENO);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  // Its own process group, so a Ctrl-C on the terminal reaches only the proxy, which then
  // stops the server in order.
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&attributes, 0);
  sigset_t no_signals;
  sigemptyset(&no_signals);
  posix_spawnattr_setsigmask(&attributes, &no_signals);

  const std::string port_text = std::to_string(port_);
  // --forceflush: its output goes to the proxy's log as it happens, not a block at a time.
  std::vector<std::string> args = {iperf3_path_, "-s",      "-B",          "127.0.0.1",
                                   "-p",         port_text, "--forceflush"};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (auto& arg : args) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);
  const int rc =
      posix_spawn(&pid_, iperf3_path_.c_str(), &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (rc != 0) {
    pid_ = -1;
    *error = "cannot start " + iperf3_path_ + ": " + net::errnoText(rc);
    return false;
  }
  started_ms_ = nowMs();
  (void)::fcntl(read_end.get(), F_SETFL, O_NONBLOCK);
  output_ = std::move(read_end);
  output_event_ = std::make_unique<ev::IoEvent>(loop_, output_.get(), ev::IoEvent::Kind::Read,
                                                [this] { onOutput(); });
  output_event_->enable();
  spdlog::info("{} iperf3 server (pid {}) on 127.0.0.1:{}", name_, pid_, port_);
  if (callbacks_.on_up) {
    if (auto listening = address()) {
      callbacks_.on_up(*listening);
    }
  }
  return true;
}

void EmbeddedServer::onOutput() {
  std::array<char, 4096> buffer{};
  const ssize_t n = ::read(output_.get(), buffer.data(), buffer.size());
  if (n <= 0) {
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      output_event_->disable();
    }
    return;
  }
  partial_line_.append(buffer.data(), static_cast<std::size_t>(n));
  std::size_t newline = 0;
  while ((newline = partial_line_.find('\n')) != std::string::npos) {
    const std::string line = partial_line_.substr(0, newline);
    partial_line_.erase(0, newline + 1);
    if (!line.empty()) {
      spdlog::debug("[{} iperf3 -s] {}", name_, line);
    }
  }
}

std::optional<net::Address> EmbeddedServer::address() const {
  if (pid_ <= 0) {
    return std::nullopt;
  }
  net::Address address = loopback();
  address.setPort(port_);
  return address;
}

void EmbeddedServer::onChildSignal() {
  if (pid_ <= 0) {
    return;
  }
  int status = 0;
  const pid_t reaped = ::waitpid(pid_, &status, WNOHANG);
  if (reaped != pid_) {
    return;
  }
  pid_ = -1;
  if (output_event_) {
    onOutput();  // the last words, if any
    output_event_->disable();
    loop_.deferredDestroy(std::move(output_event_));
  }
  if (callbacks_.on_down) {
    callbacks_.on_down();
  }
  if (stopping_) {
    return;
  }
  const bool quick = nowMs() - started_ms_ < kQuickDeathMs;
  quick_deaths_ = quick ? quick_deaths_ + 1 : 0;
  const long delay = std::min(kMaxRestartDelayMs, kRestartDelayMs << std::min(quick_deaths_, 5));
  spdlog::warn("{} iperf3 server exited ({}); restarting in {} ms", name_,
               WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                                 : "signal " + std::to_string(WTERMSIG(status)),
               delay);
  restart_.armMs(delay);
}

void EmbeddedServer::restart() {
  if (pid_ > 0 && !stopping_) {
    spdlog::warn("{} iperf3 server (pid {}) looks hung; killing it to start a fresh one", name_,
                 pid_);
    quick_deaths_ = 0;
    ::kill(pid_, SIGKILL);
  }
}

void EmbeddedServer::signalStop() {
  stopping_ = true;
  restart_.disarm();
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
  }
}

void EmbeddedServer::stop() {
  signalStop();
  if (pid_ <= 0) {
    return;
  }
  // iperf3 exits at once on SIGTERM; give it a moment, then make sure.
  for (int i = 0; i < 100; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    ::usleep(10'000);
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

}  // namespace iperf3proxy::proxy
