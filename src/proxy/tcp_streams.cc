#include "proxy/tcp_streams.h"

#include <cerrno>
#include <chrono>
#include <utility>

#include <spdlog/spdlog.h>

#include "net/socket_ops.h"

namespace iperf3proxy::proxy {

TcpStreams::TcpStreams(ev::EventLoop& loop,
                       const proto::TestParams& params,
                       const net::Address& backend,
                       const proto::Cookie& cookie,
                       long backend_connect_ms,
                       std::string log_prefix,
                       std::shared_ptr<PipePool> pipes,
                       Callbacks callbacks)
    : loop_(loop),
      log_prefix_(log_prefix),
      pipes_(std::move(pipes)),
      callbacks_(std::move(callbacks)),
      drain_deadline_(loop, [this] { endDrain(); }),
      pairing_(loop,
               params,
               backend,
               cookie,
               backend_connect_ms,
               std::move(log_prefix),
               StreamPairing::Callbacks{
                   [this](roles::Flow flow, net::UniqueFd client, net::UniqueFd server) {
                     startRelay(flow, std::move(client), std::move(server));
                   },
                   [this] { callbacks_.on_all_paired(); },
                   [this](CloseReason reason, std::string detail) {
                     callbacks_.on_failed(reason, std::move(detail));
                   }}) {}

TcpStreams::~TcpStreams() {
  stop();
}

void TcpStreams::stop() {
  stopped_ = true;
  pairing_.stop();
  drained_ = nullptr;
  drain_deadline_.disarm();
  for (const auto& relay : relays_) {
    relay->stop();
  }
}

void TcpStreams::add(net::UniqueFd fd, const net::Address& peer) {
  pairing_.addClientStream(std::move(fd), peer.port());
}

void TcpStreams::startRelay(roles::Flow flow, net::UniqueFd client, net::UniqueFd server) {
  if (stopped_) {
    return;
  }
  callbacks_.on_relay(client.get(), server.get());
  auto relay = std::make_unique<StreamRelay>(
      loop_, static_cast<int>(relays_.size()), flow, std::move(client), std::move(server), pipes_,
      [this](StreamRelay& done, const SplicePump::Completion& completion) {
        onRelayDone(done, completion);
      });
  if (!relay->start()) {
    callbacks_.on_failed(CloseReason::LocalResources,
                         "cannot create pipes: " + net::errnoText(errno));
    return;
  }
  relays_.push_back(std::move(relay));
}

void TcpStreams::onRelayDone(StreamRelay& relay, const SplicePump::Completion& completion) {
  finished_up_ += relay.bytesFromClient();
  finished_down_ += relay.bytesFromServer();
  spdlog::debug("{} stream {} ({}) ended: {} bytes up, {} bytes down, {}", log_prefix_,
                relay.index(), relay.flow() == roles::Flow::Upload ? "upload" : "download",
                relay.bytesFromClient(), relay.bytesFromServer(),
                completion.outcome == SplicePump::Outcome::Closed
                    ? std::string("closed")
                    : std::string(completion.at_first ? "client " : "server ") +
                          net::errnoText(completion.error));
  for (auto it = relays_.begin(); it != relays_.end(); ++it) {
    if (it->get() == &relay) {
      std::unique_ptr<StreamRelay> finished = std::move(*it);
      relays_.erase(it);
      loop_.deferredDelete(std::move(finished));
      return;
    }
  }
}

void TcpStreams::drainUploads(long deadline_ms, std::function<void()> drained) {
  // On a direct path the client's last test bytes are in the server's socket before TEST_END
  // is, and the server counts them. Through the proxy they could still sit in a pipe when
  // TEST_END overtakes them, so TEST_END waits until every upload relay has delivered.
  if (drain_started_) {
    return;  // one drain per test: a second TEST_END must not push the first one's end back
  }
  drain_started_ = true;
  std::vector<StreamRelay*> uploads;
  for (const auto& relay : relays_) {
    if (relay->flow() == roles::Flow::Upload) {
      uploads.push_back(relay.get());
    }
  }
  if (uploads.empty()) {
    drained();
    return;
  }
  drained_ = std::move(drained);
  uploads_draining_ = static_cast<int>(uploads.size());
  drain_deadline_.armMs(deadline_ms);
  const auto started = std::chrono::steady_clock::now();
  for (StreamRelay* relay : uploads) {
    relay->drainUpload([this, relay, started, before = relay->bytesFromClient()] {
      // For diagnosis: how long the last bytes took and how many arrived after TEST_END.
      spdlog::debug("{} stream {} upload drained in {} ms, {} bytes after the client's TEST_END",
                    log_prefix_, relay->index(),
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count(),
                    relay->bytesFromClient() - before);
      onUploadDrained();
    });
  }
}

void TcpStreams::onUploadDrained() {
  if (uploads_draining_ > 0 && --uploads_draining_ == 0) {
    endDrain();
  }
}

void TcpStreams::endDrain() {
  // By completion or by the deadline: either way every stream's drain stops looking now.
  uploads_draining_ = 0;
  drain_deadline_.disarm();
  for (const auto& relay : relays_) {
    relay->stopDrain();
  }
  if (auto drained = std::exchange(drained_, nullptr)) {
    drained();
  }
}

std::uint64_t TcpStreams::bytesUp() const {
  std::uint64_t total = finished_up_;
  for (const auto& relay : relays_) {
    total += relay->bytesFromClient();
  }
  return total;
}

std::uint64_t TcpStreams::bytesDown() const {
  std::uint64_t total = finished_down_;
  for (const auto& relay : relays_) {
    total += relay->bytesFromServer();
  }
  return total;
}

}  // namespace iperf3proxy::proxy
