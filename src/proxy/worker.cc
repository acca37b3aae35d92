#include "proxy/worker.h"

#include <utility>

#include <spdlog/spdlog.h>

namespace iperf3proxy::proxy {

Worker::Worker(int index,
               ev::EventLoop& loop,
               ev::EventLoop& front_loop,
               Front& front,
               const ProxySettings& settings,
               TrafficCounters& traffic)
    : index_(index),
      loop_(loop),
      front_loop_(front_loop),
      front_(front),
      settings_(settings),
      traffic_(traffic),
      udp_ticker_(std::make_shared<ev::PollTicker>(
          loop, std::chrono::microseconds{settings.data_path.udp_poll_us})),
      pipes_(std::make_shared<PipePool>(settings.data_path.pipe_size)) {}

Worker::~Worker() {
  closeAll(CloseReason::Shutdown);
}

Session* Worker::find(const proto::Cookie& test) {
  auto it = sessions_.find(test);
  return it == sessions_.end() ? nullptr : it->second.get();
}

void Worker::startSession(const proto::Cookie& test,
                          net::UniqueFd client,
                          const net::Address& peer,
                          std::chrono::steady_clock::time_point accepted,
                          std::optional<pool::Lease> lease) {
  auto session = std::make_unique<Session>(loop_, settings_, static_cast<SessionHost&>(*this), test,
                                           std::move(client), peer, accepted);
  Session& ref = *session;
  sessions_[test] = std::move(session);
  ref.start(std::move(lease));
}

void Worker::attachStream(const proto::Cookie& test, net::UniqueFd fd, const net::Address& peer) {
  if (Session* session = find(test)) {
    session->attachStream(std::move(fd), peer);
  }
  // Else the test ended meanwhile: the connection closes here, as it would at a closed server.
}

void Worker::backendGranted(const proto::Cookie& test, pool::Lease lease) {
  if (Session* session = find(test)) {
    session->onBackendGranted(std::move(lease));
  }
  // Else the session ended meanwhile; its end, already on its way to the front, frees the lease.
}

void Worker::noBackend(const proto::Cookie& test, CloseReason reason, const std::string& detail) {
  if (Session* session = find(test)) {
    session->onNoBackend(reason, detail);
  }
}

void Worker::udpSetupGranted(const proto::Cookie& test) {
  if (Session* session = find(test)) {
    session->onUdpSetupGranted();
  }
}

void Worker::datagram(const proto::Cookie& test,
                      const net::Address& proxy_local,
                      const net::Address& source,
                      const std::vector<std::uint8_t>& bytes) {
  if (Session* session = find(test)) {
    session->onDatagram(proxy_local, source, bytes);
  }
}

void Worker::closeAll(CloseReason reason) {
  // close() ends in sessionEnded(), which erases: iterate over a snapshot.
  std::vector<Session*> open;
  open.reserve(sessions_.size());
  for (auto& [cookie, session] : sessions_) {
    open.push_back(session.get());
  }
  for (Session* session : open) {
    session->close(reason);
  }
}

void Worker::backendFault(const proto::Cookie& test, pool::BackendFault fault) {
  front_loop_.post([front = &front_, test, fault] { front->onBackendFault(test, fault); });
}

void Worker::requestUdpSetup(const proto::Cookie& test, const std::string& client_host) {
  front_loop_.post(
      [front = &front_, test, client_host] { front->onUdpSetupRequested(test, client_host); });
}

LoopDatagramIo Worker::udpIo() {
  auto stray = [front_loop = &front_loop_, front = &front_](
                   const net::Address& local, const net::Address& source,
                   std::span<const std::uint8_t> datagram) {
    front_loop->post([front, local, source,
                      bytes = std::vector<std::uint8_t>(datagram.begin(), datagram.end())] {
      front->onStrayDatagram(local, source, bytes);
    });
  };
  return {udp_batch_, udp_ticker_, stray};
}

void Worker::udpSetupDone(const proto::Cookie& test) {
  front_loop_.post([front = &front_, test] { front->onUdpSetupDone(test); });
}

void Worker::testFinishing(const proto::Cookie& test) {
  front_loop_.post([front = &front_, test] { front->onTestFinishing(test); });
}

void Worker::testRunning(std::chrono::duration<double> setup) {
  front_loop_.post([front = &front_, setup] { front->onTestRunning(setup); });
}

void Worker::sessionEnded(const proto::Cookie& test,
                          const TestSummary& summary,
                          bool backend_broke) {
  auto it = sessions_.find(test);
  if (it != sessions_.end()) {
    loop_.deferredDelete(std::move(it->second));
    sessions_.erase(it);
  }
  front_loop_.post([front = &front_, test, summary, backend_broke] {
    front->onSessionEnded(test, summary, backend_broke);
  });
}

WorkerThread::WorkerThread(int index,
                           ev::EventLoop& front_loop,
                           Front& front,
                           const ProxySettings& settings,
                           TrafficCounters& traffic)
    : worker_(index, loop_, front_loop, front, settings, traffic),
      thread_([this] { loop_.run(); }) {}

WorkerThread::~WorkerThread() {
  stop();
}

void WorkerThread::stop() {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  loop_.post([this] {
    worker_.closeAll(CloseReason::Shutdown);
    loop_.stop();
  });
  thread_.join();
}

}  // namespace iperf3proxy::proxy
