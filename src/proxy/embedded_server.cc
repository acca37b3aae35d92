#include "proxy/embedded_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"
#include "proxy/settings.h"

extern char** environ;

namespace iperf3proxy::proxy {
namespace {

constexpr long kRestartDelayMs = fixed::kEmbeddedRestartDelayMs;
constexpr long kMaxRestartDelayMs = fixed::kEmbeddedMaxRestartDelayMs;
constexpr long long kQuickDeathMs = fixed::kEmbeddedQuickDeathMs;
// What is kept of a server's output until it listens: its error, if it will not start.
constexpr std::size_t kStartupOutputCap = 8192;
// /proc/net/tcp: the state column of a listening socket (include/net/tcp_states.h).
constexpr std::string_view kTcpListen = "0A";

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

std::string iperf3StartupError(const std::string& output) {
  std::string error;
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.starts_with("Usage:")) {
      break;
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      continue;
    }
    error += (error.empty() ? "" : "; ") + line;
  }
  return error.empty() ? "(it printed nothing)" : error;
}

std::optional<bool> loopbackListening(pid_t pid, std::uint16_t port) {
  std::ifstream table("/proc/" + std::to_string(pid) + "/net/tcp");
  if (!table) {
    return std::nullopt;
  }
  // "  sl  local_address rem_address   st ...": the address is the kernel's network-order
  // word printed as a number (0100007F on little-endian machines), then the port in hex.
  const std::string local = fmt::format("{:08X}:{:04X}", htonl(INADDR_LOOPBACK), port);
  std::string line;
  std::getline(table, line);  // the header
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot;
    std::string local_address;
    std::string remote_address;
    std::string state;
    if ((fields >> slot >> local_address >> remote_address >> state) && local_address == local &&
        state == kTcpListen) {
      return true;
    }
  }
  return false;
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
  ssize_t n = 0;
  // Until the pipe is empty: a server that exited leaves all it said in it at once.
  while ((n = ::read(output_.get(), buffer.data(), buffer.size())) > 0) {
    if (!listened_ && startup_output_.size() < kStartupOutputCap) {
      startup_output_.append(buffer.data(), std::min(static_cast<std::size_t>(n),
                                                     kStartupOutputCap - startup_output_.size()));
    }
    partial_line_.append(buffer.data(), static_cast<std::size_t>(n));
  }
  if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    output_event_->disable();
  }
  std::size_t newline = 0;
  while ((newline = partial_line_.find('\n')) != std::string::npos) {
    const std::string line = partial_line_.substr(0, newline);
    partial_line_.erase(0, newline + 1);
    if (!line.empty()) {
      spdlog::debug("[{} iperf3 -s] {}", name_, line);
    }
  }
}

EmbeddedServer::Startup EmbeddedServer::checkStartup() {
  if (listened_) {
    return Startup::Listening;
  }
  if (output_event_) {
    onOutput();  // what it said so far, its error included if it is exiting
  }
  if (pid_ <= 0) {
    return Startup::Exited;
  }
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    stopping_ = true;  // the proxy does not start: no restart
    if (output_event_) {
      onOutput();  // its last words
      output_event_->disable();
    }
    return Startup::Exited;
  }
  // Without a readable /proc a server that is still there after a moment counts as started.
  const std::optional<bool> listening = loopbackListening(pid_, port_);
  listened_ = listening ? *listening : nowMs() - started_ms_ > kQuickDeathMs;
  if (listened_) {
    startup_output_.clear();
  }
  return listened_ ? Startup::Listening : Startup::Waiting;
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
