#include "proxy/backends.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "net/address.h"
#include "pool/backends_file.h"
#include "proxy/settings.h"

namespace iperf3proxy::proxy {
namespace {

pool::TimePoint now() {
  return pool::Clock::now();
}

using fixed::kProbeDeadlineMs;
using fixed::kProbeIntervalMs;
// Starting the embedded servers, before the event loop runs: how long they may take to listen,
// and how often to look.
constexpr std::chrono::milliseconds kEmbeddedStartDeadline{fixed::kEmbeddedStartDeadlineMs};
constexpr std::chrono::milliseconds kEmbeddedStartPoll{5};

}  // namespace

Backends::Backends(ev::EventLoop& loop,
                   BackendsConfig config,
                   pool::PoolSettings settings,
                   Callbacks callbacks)
    : loop_(loop),
      config_(std::move(config)),
      callbacks_(std::move(callbacks)),
      pool_(settings),
      tick_(loop, [this] { settle(); }),
      probe_tick_(loop, [this] { probeDown(); }) {}

Backends::~Backends() {
  stop();
}

bool Backends::addFromFile(const std::string& text, std::string* error) {
  std::string why;
  const auto address = net::resolveHostPort(text, &why);
  if (!address) {
    *error = "backend " + text + ": " + why;
    return false;
  }
  if (givenAt(*address)) {
    spdlog::warn("backend {} is {}, already a backend: listed once", text, address->toString());
    return true;
  }
  from_file_[address->toString()] = addGiven(*address);
  return true;
}

std::optional<pool::BackendId> Backends::givenAt(const net::Address& address) const {
  const std::string key = address.toString();
  for (const auto& [id, at] : given_) {
    if (at.toString() == key) {
      return id;
    }
  }
  return std::nullopt;
}

pool::BackendId Backends::addGiven(const net::Address& address) {
  // Named by where it is, resolved: that is what the logs and the summary lines show.
  const pool::BackendId id =
      pool_.add(address.toString(), pool::BackendKind::Given, address, now());
  given_[id] = address;
  return id;
}

void Backends::markDown(pool::BackendId id) {
  if (down_.contains(id)) {
    return;
  }
  const std::string* name = pool_.nameOf(id);
  spdlog::warn(
      "backend {} refuses connections: out of dispatch, checked every {} ms until it "
      "listens again",
      name != nullptr ? *name : "?", kProbeIntervalMs);
  pool_.setAddress(id, std::nullopt, now());
  down_[id] = nullptr;
  if (!probe_tick_.armed()) {
    probe_tick_.armMs(kProbeIntervalMs);
  }
}

void Backends::probeDown() {
  for (auto& [id, probe] : down_) {
    if (probe || !given_.contains(id)) {
      continue;  // a check under way, or a backend removed meanwhile
    }
    probe = std::make_unique<BackendProbe>(
        loop_, given_.at(id), kProbeDeadlineMs, [this, id = id](bool listening) {
          auto it = down_.find(id);
          if (it == down_.end()) {
            return;
          }
          // The probe calls this from its own event: it is freed once that has returned.
          loop_.deferredDestroy(std::move(it->second));
          if (!listening) {
            return;  // the next tick checks again
          }
          down_.erase(it);
          if (const std::string* name = pool_.nameOf(id)) {
            spdlog::info("backend {} listens again: back in dispatch", *name);
            // From now on the pool expects refusals for a moment (the server may have just
            // started, or re-listens after the probe's connection).
            pool_.setAddress(id, given_.at(id), now());
            settle();
          }
        });
    probe->start();
  }
  std::erase_if(down_, [this](const auto& entry) { return pool_.nameOf(entry.first) == nullptr; });
  if (!down_.empty()) {
    probe_tick_.armMs(kProbeIntervalMs);
  }
}

bool Backends::readFile(std::vector<std::string>* entries, std::string* error) const {
  std::ifstream in(*config_.file);
  if (!in) {
    *error = "cannot read --backends-file " + *config_.file;
    return false;
  }
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = pool::parseBackendsFile(text.str());
  if (auto* failure = std::get_if<pool::BackendsFileError>(&parsed)) {
    *error = *config_.file + ":" + std::to_string(failure->line) + ": " + failure->message;
    return false;
  }
  *entries = std::get<std::vector<std::string>>(std::move(parsed));
  return true;
}

bool Backends::start(std::string* error, int* exit_code) {
  *exit_code = 2;
  for (const auto& text : config_.given) {
    std::string why;
    const auto address = net::resolveHostPort(text, &why);
    if (!address) {
      *error = "--backend " + text + ": " + why;
      return false;
    }
    if (givenAt(*address)) {
      spdlog::warn("--backend {} is {}, already a backend: listed once", text, address->toString());
      continue;
    }
    addGiven(*address);
  }
  if (config_.file) {
    std::vector<std::string> entries;
    if (!readFile(&entries, error)) {
      return false;
    }
    for (const auto& entry : entries) {
      if (!addFromFile(entry, error)) {
        return false;
      }
    }
  }
  for (int i = 0; i < config_.embedded; ++i) {
    const std::string name = "embedded-" + std::to_string(i + 1);
    const pool::BackendId id = pool_.add(name, pool::BackendKind::Embedded, std::nullopt, now());
    auto server = std::make_unique<EmbeddedServer>(
        loop_, name, config_.iperf3_path, config_.iperf3_args,
        EmbeddedServer::Callbacks{[this, id](const net::Address& address) {
                                    pool_.setAddress(id, address, now());
                                    settle();
                                  },
                                  [this, id] {
                                    pool_.setAddress(id, std::nullopt, now());
                                  }});
    embedded_by_id_[id] = server.get();
    embedded_.push_back(std::move(server));
    if (!embedded_.back()->start(error)) {
      *exit_code = 1;
      return false;
    }
  }
  return awaitEmbeddedListening(error, exit_code);
}

bool Backends::awaitEmbeddedListening(std::string* error, int* exit_code) {
  // Before the proxy says it is ready: a server that will not take the options after `--`
  // (some iperf3 checks only once it sets up, e.g. CPU affinity) stops the proxy here, with
  // iperf3's own words, instead of dying and restarting behind a proxy that looks fine.
  const auto deadline = std::chrono::steady_clock::now() + kEmbeddedStartDeadline;
  for (;;) {
    bool waiting = false;
    for (const auto& server : embedded_) {
      switch (server->checkStartup()) {
        case EmbeddedServer::Startup::Listening:
          break;
        case EmbeddedServer::Startup::Waiting:
          waiting = true;
          break;
        case EmbeddedServer::Startup::Exited:
          *exit_code = config_.iperf3_args.empty() ? 1 : 2;
          *error = fmt::format("the embedded iperf3 server would not start{}: {}",
                               config_.iperf3_args.empty() ? "" : " with the options after --",
                               iperf3StartupError(server->startupOutput()));
          return false;
      }
    }
    if (!waiting) {
      return true;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      *exit_code = 1;
      *error = fmt::format(
          "the embedded iperf3 servers did not listen within {} s",
          std::chrono::duration_cast<std::chrono::seconds>(kEmbeddedStartDeadline).count());
      return false;
    }
    std::this_thread::sleep_for(kEmbeddedStartPoll);
  }
}

void Backends::reload() {
  if (!config_.file) {
    spdlog::info("SIGHUP: no --backends-file to re-read");
    return;
  }
  std::vector<std::string> entries;
  std::string error;
  if (!readFile(&entries, &error)) {
    spdlog::error("SIGHUP: {}; the backends stay as they were", error);
    return;
  }
  // Resolve everything first: a file that is half valid changes nothing. Entries are compared
  // by where they resolve to, so a new spelling of a listed server changes nothing either.
  std::map<std::string, net::Address> wanted;
  for (const auto& entry : entries) {
    std::string why;
    const auto address = net::resolveHostPort(entry, &why);
    if (!address) {
      spdlog::error("SIGHUP: {}: {}: {}; the backends stay as they were", *config_.file, entry,
                    why);
      return;
    }
    wanted.emplace(address->toString(), *address);
  }
  int removed = 0;
  for (auto it = from_file_.begin(); it != from_file_.end();) {
    if (!wanted.contains(it->first)) {
      spdlog::info("backend {} removed; it takes no new test and leaves once its test ends",
                   it->first);
      pool_.retire(it->second);
      given_.erase(it->second);
      it = from_file_.erase(it);
      ++removed;
    } else {
      ++it;
    }
  }
  int added = 0;
  for (const auto& [key, address] : wanted) {
    if (from_file_.contains(key) || givenAt(address)) {
      continue;  // listed already (a --backend, or this file before)
    }
    if (const auto retired = pool_.retiredAt(address)) {
      // Removed earlier and still running its test: the same server, so the same backend.
      pool_.unretire(*retired);
      given_[*retired] = address;
      from_file_[key] = *retired;
      spdlog::info("backend {} back in the pool (its test still runs)", key);
    } else {
      from_file_[key] = addGiven(address);
      spdlog::info("backend {} added", key);
    }
    ++added;
  }
  spdlog::info("SIGHUP: re-read {}: {} added, {} removed, {} in the file", *config_.file, added,
               removed, entries.size());
  settle();
}

pool::BackendPool::Answer Backends::request(const proto::Cookie& test) {
  auto answer = pool_.request(test, now());
  if (std::holds_alternative<pool::BackendPool::Queued>(answer)) {
    // The wait has a deadline: make sure the timer covers it. (No poll here: the caller has not
    // registered the test yet, and a grant for it now would find nobody to take it.)
    armTimer();
  }
  return answer;
}

void Backends::fault(const proto::Cookie& test, pool::BackendFault fault) {
  const auto backend = pool_.leaseOf(test);
  ++faults_[static_cast<std::size_t>(fault)];
  const bool hung = pool_.fault(test, fault, now());
  if (fault == pool::BackendFault::Refused && backend && given_.contains(*backend)) {
    markDown(*backend);
  }
  if (hung && backend) {
    ++hung_reports_;
    const std::string* name = pool_.nameOf(*backend);
    spdlog::warn(
        "backend {} keeps answering \"busy\" while no proxied test runs on it: it is hung, or "
        "clients reach it directly{}",
        name != nullptr ? *name : "?",
        embedded_by_id_.contains(*backend) ? "; restarting it"
                                           : "; it stays out of dispatch "
                                             "for a backoff each time");
    if (auto it = embedded_by_id_.find(*backend); it != embedded_by_id_.end()) {
      it->second->restart();
    }
  }
  settle();
}

void Backends::release(const proto::Cookie& test, bool backend_broke) {
  if (backend_broke && pool_.leaseOf(test)) {
    ++faults_[static_cast<std::size_t>(pool::BackendFault::Broke)];
  }
  pool_.release(test, now(), backend_broke);
  settle();
}

void Backends::settle() {
  const auto changes = pool_.poll(now());
  for (const auto& [test, lease] : changes.granted) {
    callbacks_.on_granted(test, lease);
  }
  for (const auto& expiry : changes.expired) {
    callbacks_.on_expired(expiry.test, expiry.behind_finishing);
  }
  armTimer();
}

void Backends::armTimer() {
  if (const auto next = pool_.nextDeadline(now())) {
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*next - now());
    tick_.armMs(std::max<long>(1, static_cast<long>(wait.count()) + 1));
  } else {
    tick_.disarm();
  }
}

void Backends::onChildSignal() {
  for (const auto& server : embedded_) {
    server->onChildSignal();
  }
}

void Backends::stop() {
  tick_.disarm();
  probe_tick_.disarm();
  down_.clear();
  for (const auto& server : embedded_) {
    server->signalStop();
  }
  for (const auto& server : embedded_) {
    server->stop();
  }
}

bool Backends::canTakeTests() const {
  return pool_.canTakeTests(now());
}

std::vector<pool::BackendView> Backends::view() const {
  return pool_.backends(now());
}

std::string Backends::faultSummary() const {
  std::string text = "faults";
  for (std::size_t i = 0; i < faults_.size(); ++i) {
    const auto fault = static_cast<pool::BackendFault>(i);
    const char* name = fault == pool::BackendFault::Refused  ? "refused"
                       : fault == pool::BackendFault::Silent ? "silent"
                       : fault == pool::BackendFault::Busy   ? "busy"
                       : fault == pool::BackendFault::Closed ? "closed"
                                                             : "broke";
    text += fmt::format(" {}={}", name, faults_[i]);
  }
  return text + fmt::format(" hung={}", hung_reports_);
}

std::string Backends::describe() const {
  std::string text;
  for (const auto& backend : pool_.backends(now())) {
    text += (text.empty() ? "" : ", ") + backend.name;
  }
  return text.empty() ? "none" : text;
}

}  // namespace iperf3proxy::proxy
