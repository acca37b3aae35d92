#include "pool/backend_pool.h"

#include <algorithm>
#include <utility>

namespace iperf3proxy::pool {

std::string_view backendFaultName(BackendFault fault) {
  switch (fault) {
    case BackendFault::Refused:
      return "refused the connection";
    case BackendFault::Silent:
      return "answered nothing in time";
    case BackendFault::Busy:
      return "answered busy with no proxied test on it";
    case BackendFault::Closed:
      return "closed the connection before answering";
    case BackendFault::Broke:
      return "broke off a running test";
  }
  return "unknown";
}

std::string_view backendStateName(BackendState state) {
  switch (state) {
    case BackendState::Idle:
      return "idle";
    case BackendState::Running:
      return "running";
    case BackendState::Backoff:
      return "backoff";
    case BackendState::Down:
      return "down";
    case BackendState::Retired:
      return "retired";
  }
  return "unknown";
}

BackendPool::BackendPool(PoolSettings settings) : settings_(settings) {}

BackendId BackendPool::add(std::string name,
                           BackendKind kind,
                           std::optional<net::Address> address,
                           TimePoint now) {
  Backend backend{};
  backend.id = next_id_++;
  backend.name = std::move(name);
  backend.kind = kind;
  backend.address = address;
  // A new backend has never run a test: it sorts first in least-recently-used order.
  backend.idle_since = TimePoint{};
  backend.started = now;
  backend.backoff = settings_.backoff_min;
  backends_.push_back(std::move(backend));
  return backends_.back().id;
}

BackendPool::Backend* BackendPool::find(BackendId id) {
  for (auto& backend : backends_) {
    if (backend.id == id) {
      return &backend;
    }
  }
  return nullptr;
}

const BackendPool::Backend* BackendPool::find(BackendId id) const {
  for (const auto& backend : backends_) {
    if (backend.id == id) {
      return &backend;
    }
  }
  return nullptr;
}

void BackendPool::setAddress(BackendId id, std::optional<net::Address> address, TimePoint now) {
  if (Backend* backend = find(id)) {
    backend->address = address;
    backend->started = now;
    if (address) {
      // A fresh process: whatever its predecessor did says nothing about it.
      backend->backoff_until = TimePoint{};
      backend->backoff = settings_.backoff_min;
      backend->busy_streak = 0;
      backend->last_fault_busy = false;
    }
  }
}

void BackendPool::retire(BackendId id) {
  if (Backend* backend = find(id)) {
    backend->retired = true;
  }
  forgetRetired();
}

std::optional<BackendId> BackendPool::retiredAt(const net::Address& address) const {
  for (const auto& backend : backends_) {
    if (backend.retired && backend.address && backend.address->toString() == address.toString()) {
      return backend.id;
    }
  }
  return std::nullopt;
}

void BackendPool::unretire(BackendId id) {
  if (Backend* backend = find(id)) {
    backend->retired = false;
  }
}

void BackendPool::forgetRetired() {
  std::erase_if(backends_, [](const Backend& b) { return b.retired && !b.test; });
}

bool BackendPool::eligible(const Backend& backend, TimePoint now) const {
  return backend.address && !backend.test && !backend.retired && now >= backend.backoff_until;
}

BackendPool::Backend* BackendPool::pickFree(TimePoint now) {
  Backend* best = nullptr;
  for (auto& backend : backends_) {
    if (eligible(backend, now) && (best == nullptr || backend.idle_since < best->idle_since)) {
      best = &backend;
    }
  }
  return best;
}

Lease BackendPool::leaseFor(Backend& backend, const TestKey& test) {
  backend.test = test;
  ++backend.tests;
  leases_[test] = backend.id;
  return Lease{backend.id, backend.name, *backend.address,
               std::max(backend.idle_since, backend.started) + settings_.relisten_grace};
}

BackendPool::Answer BackendPool::request(const TestKey& test, TimePoint now) {
  const TimePoint since = asked_since_.try_emplace(test, now).first->second;
  // First come, first served: nobody overtakes a test that is already waiting.
  if (queue_.empty()) {
    if (Backend* backend = pickFree(now)) {
      return leaseFor(*backend, test);
    }
  }
  if (settings_.queue_timeout.count() > 0 && queue_.size() < settings_.queue_length) {
    const TimePoint deadline = since + settings_.queue_timeout;
    if (now < deadline) {
      queue_.push_back(Waiter{test, deadline, false});
      return Queued{};
    }
    asked_since_.erase(test);
    return Refused{false,
                   "no backend was free within --queue-timeout " +
                       std::to_string(settings_.queue_timeout.count()) + " ms",
                   true};
  }
  if (mayWaitForFinishing() && now < since + settings_.finishing_wait) {
    queue_.push_back(Waiter{test, since + settings_.finishing_wait, true});
    return Queued{};
  }
  asked_since_.erase(test);
  const bool any_up =
      std::any_of(backends_.begin(), backends_.end(), [&](const Backend& b) { return up(b, now); });
  if (!any_up) {
    return Refused{true, "no backend is up"};
  }
  if (settings_.queue_timeout.count() > 0) {
    return Refused{false, "every backend is running a test and the queue is full"};
  }
  return Refused{false, "every backend is running a test"};
}

bool BackendPool::up(const Backend& backend, TimePoint now) const {
  return backend.address && !backend.retired &&
         (now >= backend.backoff_until || backend.last_fault_busy);
}

bool BackendPool::mayWaitForFinishing() const {
  // One waiter per finishing backend: beyond that, a newcomer would wait for nothing.
  const auto finishing = std::count_if(backends_.begin(), backends_.end(), [](const Backend& b) {
    return b.test && b.finishing && !b.retired;
  });
  const auto waiting = std::count_if(queue_.begin(), queue_.end(),
                                     [](const Waiter& w) { return w.behind_finishing; });
  return waiting < finishing;
}

void BackendPool::finishing(const TestKey& test) {
  auto it = leases_.find(test);
  if (it != leases_.end()) {
    if (Backend* backend = find(it->second)) {
      backend->finishing = true;
    }
  }
}

void BackendPool::freeBackend(Backend& backend, TimePoint now) {
  backend.test.reset();
  backend.finishing = false;
  backend.idle_since = now;
}

void BackendPool::penalise(Backend& backend, TimePoint now) {
  ++backend.faults;
  backend.backoff_until = now + backend.backoff;
  backend.backoff = std::min(backend.backoff * 2, settings_.backoff_max);
}

bool BackendPool::fault(const TestKey& test, BackendFault fault, TimePoint now) {
  auto it = leases_.find(test);
  if (it == leases_.end()) {
    return false;
  }
  Backend* backend = find(it->second);
  leases_.erase(it);
  if (backend == nullptr) {
    return false;
  }
  freeBackend(*backend, now);
  penalise(*backend, now);
  bool hung = false;
  backend->last_fault_busy = fault == BackendFault::Busy;
  if (fault == BackendFault::Busy) {
    hung = ++backend->busy_streak == settings_.busy_streak_hung;
  } else {
    backend->busy_streak = 0;
  }
  forgetRetired();
  return hung;
}

void BackendPool::release(const TestKey& test, TimePoint now, bool backend_broke) {
  std::erase_if(queue_, [&](const Waiter& w) { return w.test == test; });
  asked_since_.erase(test);
  auto it = leases_.find(test);
  if (it == leases_.end()) {
    return;
  }
  Backend* backend = find(it->second);
  leases_.erase(it);
  if (backend == nullptr) {
    return;
  }
  freeBackend(*backend, now);
  backend->last_fault_busy = false;
  if (backend_broke) {
    penalise(*backend, now);
  } else {
    backend->backoff = settings_.backoff_min;
    backend->busy_streak = 0;
  }
  forgetRetired();
}

BackendPool::Changes BackendPool::poll(TimePoint now) {
  Changes changes;
  while (!queue_.empty()) {
    Backend* backend = pickFree(now);
    if (backend == nullptr) {
      break;
    }
    const TestKey test = queue_.front().test;
    queue_.pop_front();
    changes.granted.emplace_back(test, leaseFor(*backend, test));
  }
  // Deadlines are not in queue order: a test that asks again after a fault keeps the deadline of
  // its first request, and a wait behind a finishing test has a deadline of its own.
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (it->deadline <= now) {
      changes.expired.push_back(Expiry{it->test, it->behind_finishing});
      asked_since_.erase(it->test);
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  return changes;
}

std::optional<TimePoint> BackendPool::nextDeadline(TimePoint now) const {
  if (queue_.empty()) {
    return std::nullopt;
  }
  TimePoint next = queue_.front().deadline;
  for (const auto& waiter : queue_) {
    next = std::min(next, waiter.deadline);
  }
  // A backend whose backoff ends can take a waiting test.
  for (const auto& backend : backends_) {
    if (backend.address && !backend.test && !backend.retired && backend.backoff_until > now) {
      next = std::min(next, backend.backoff_until);
    }
  }
  return next;
}

bool BackendPool::canTakeTests(TimePoint now) const {
  bool any_free = false;
  bool any_up = false;
  for (const auto& backend : backends_) {
    if (backend.address && !backend.retired && now >= backend.backoff_until) {
      any_up = true;
      any_free = any_free || !backend.test;
    }
  }
  const bool queue_room =
      settings_.queue_timeout.count() > 0 && queue_.size() < settings_.queue_length;
  return any_up && (any_free || queue_room);
}

std::optional<BackendId> BackendPool::leaseOf(const TestKey& test) const {
  auto it = leases_.find(test);
  return it == leases_.end() ? std::nullopt : std::optional(it->second);
}

bool BackendPool::queued(const TestKey& test) const {
  return std::any_of(queue_.begin(), queue_.end(), [&](const Waiter& w) { return w.test == test; });
}

BackendState BackendPool::stateOf(const Backend& backend, TimePoint now) const {
  if (backend.retired) {
    return BackendState::Retired;
  }
  if (backend.test) {
    return BackendState::Running;
  }
  if (!backend.address) {
    return BackendState::Down;
  }
  if (now < backend.backoff_until) {
    return BackendState::Backoff;
  }
  return BackendState::Idle;
}

std::vector<BackendView> BackendPool::backends(TimePoint now) const {
  std::vector<BackendView> views;
  views.reserve(backends_.size());
  for (const auto& backend : backends_) {
    views.push_back(BackendView{backend.id, backend.name, backend.kind, stateOf(backend, now),
                                backend.tests, backend.faults, backend.busy_streak});
  }
  return views;
}

std::optional<BackendKind> BackendPool::kindOf(BackendId id) const {
  const Backend* backend = find(id);
  return backend != nullptr ? std::optional(backend->kind) : std::nullopt;
}

const std::string* BackendPool::nameOf(BackendId id) const {
  const Backend* backend = find(id);
  return backend != nullptr ? &backend->name : nullptr;
}

}  // namespace iperf3proxy::pool
