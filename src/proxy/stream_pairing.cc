#include "proxy/stream_pairing.h"

#include <sys/socket.h>

#include <cerrno>

#include <spdlog/spdlog.h>

namespace iperf3proxy::proxy {
namespace {

// The first byte waiting on a socket, read or only peeked at.
struct FirstByte {
  enum class Status { Data, Eof, Again, Error } status;
  std::uint8_t byte = 0;
  int error = 0;
};

FirstByte readFirstByte(int fd, int flags) {
  FirstByte result{FirstByte::Status::Data};
  const ssize_t n = ::recv(fd, &result.byte, 1, flags | MSG_DONTWAIT);
  if (n == 1) {
    return result;
  }
  if (n == 0) {
    result.status = FirstByte::Status::Eof;
  } else if (errno == EAGAIN || errno == EINTR) {
    result.status = FirstByte::Status::Again;
  } else {
    result.status = FirstByte::Status::Error;
    result.error = errno;
  }
  return result;
}

net::StreamSocketOptions streamOptionsOf(const proto::TestParams& params) {
  return net::StreamSocketOptions{params.congestion, params.tos,     params.window,
                                  params.mss,        params.fq_rate, params.nodelay};
}

}  // namespace

StreamPairing::StreamPairing(ev::EventLoop& loop,
                             const proto::TestParams& params,
                             const net::Address& backend,
                             const proto::Cookie& cookie,
                             long backend_connect_ms,
                             std::string log_prefix,
                             Callbacks callbacks)
    : loop_(loop),
      log_prefix_(std::move(log_prefix)),
      callbacks_(std::move(callbacks)),
      role_bytes_(params.role_byte),
      bidirectional_(params.mode == proto::TestMode::Bidirectional),
      options_(streamOptionsOf(params)),
      resolver_(params.uploadStreams(), params.downloadStreams()),
      dialer_(loop,
              backend,
              cookie,
              backend_connect_ms,
              options_,
              StreamDialer::Callbacks{
                  [this](net::UniqueFd fd) { onServerStreamReady(std::move(fd)); },
                  [this](int error) {
                    // The proxy's own limits say nothing about the server.
                    fail(net::isLocalResourceError(error) ? CloseReason::LocalResources
                                                          : CloseReason::StreamDialFailed,
                         "backend data connection: " + net::errnoText(error));
                  }}) {}

StreamPairing::~StreamPairing() {
  stop();
}

void StreamPairing::stop() {
  stopped_ = true;
  dialer_.stop();
  for (Streams* streams : {&client_streams_, &server_streams_}) {
    for (auto& [id, stream] : *streams) {
      if (stream.watch) {
        stream.watch->disable();
      }
    }
  }
}

void StreamPairing::addClientStream(net::UniqueFd fd, std::uint16_t source_port) {
  const roles::StreamId id = next_client_id_++;
  if (const std::string failed = net::applyStreamOptions(fd.get(), options_); !failed.empty()) {
    spdlog::debug("{} client data connection: could not set {}", log_prefix_, failed);
  }
  PendingStream& stream = client_streams_[id] = PendingStream{std::move(fd), source_port, nullptr};
  // The backend connection is opened at once: servers from 3.15 give up on a data connection
  // whose cookie does not arrive within 10 s.
  dialer_.dialOne();
  if (role_bytes_) {
    watch(stream, [this, id] { onRoleByteReadable(id); });
  } else {
    registerClientStream(id, std::nullopt);
  }
}

bool StreamPairing::settleByGuess() {
  if (resolver_.allPaired()) {
    return true;
  }
  if (!resolver_.allClientStreamsArrived() || !resolver_.allServerStreamsArrived()) {
    return false;
  }
  roles_guessed_ = true;
  spdlog::warn(
      "{} the client's roles were not all evident in time; pairing the rest by source-port order",
      log_prefix_);
  settle(resolver_.settleByGuess());
  return true;
}

void StreamPairing::watch(PendingStream& stream, std::function<void()> on_readable) {
  stream.watch = std::make_unique<ev::IoEvent>(loop_, stream.fd.get(), ev::IoEvent::Kind::Read,
                                               std::move(on_readable));
  stream.watch->enable();
}

StreamPairing::PendingStream* StreamPairing::find(Streams& streams, roles::StreamId id) {
  auto it = streams.find(id);
  return stopped_ || it == streams.end() ? nullptr : &it->second;
}

void StreamPairing::retireWatch(PendingStream& stream) {
  // The watch may be the event whose callback is running: stop it now, free it later.
  if (stream.watch) {
    stream.watch->disable();
    loop_.deferredDestroy(std::move(stream.watch));
  }
}

void StreamPairing::onRoleByteReadable(roles::StreamId id) {
  PendingStream* stream = find(client_streams_, id);
  if (stream == nullptr) {
    return;
  }
  // Read, not peeked: the role byte is the proxy's and never reaches the server.
  const FirstByte first = readFirstByte(stream->fd.get(), 0);
  if (first.status == FirstByte::Status::Again) {
    return;
  }
  retireWatch(*stream);
  if (first.status != FirstByte::Status::Data) {
    fail(CloseReason::StreamClosedEarly, "data connection closed before its role byte");
    return;
  }
  registerClientStream(id, roles::decodeRoleByte(first.byte));
}

void StreamPairing::registerClientStream(roles::StreamId id,
                                         std::optional<roles::RoleByte> role_byte) {
  PendingStream& stream = client_streams_.at(id);
  resolver_.addClientStream(id, stream.source_port, role_byte);
  if (!resolver_.clientFlow(id)) {
    watch(stream, [this, id] { onClientStreamReadable(id); });
  }
  settle(resolver_.takeSettled());
}

bool StreamPairing::peekedTestData(Streams& streams, roles::StreamId id, std::string_view who) {
  PendingStream* stream = find(streams, id);
  if (stream == nullptr) {
    return false;
  }
  // Peek only: the byte is test data and goes to the other side once the connection is paired.
  const FirstByte first = readFirstByte(stream->fd.get(), MSG_PEEK);
  if (first.status == FirstByte::Status::Again) {
    return false;
  }
  stream->watch->disable();
  if (first.status == FirstByte::Status::Eof) {
    // A short test can end before a connection's role is certain: the server closes its data
    // connections at TEST_END, the client its own after the results. Its EOF stays in the
    // socket and reaches the other side like any byte if the connection is paired later.
    spdlog::debug("{} {} closed data connection {} before it was paired", log_prefix_, who, id);
    return false;
  }
  if (first.status == FirstByte::Status::Error) {
    fail(CloseReason::StreamClosedEarly,
         fmt::format("{} data connection: {}", who, net::errnoText(first.error)));
    return false;
  }
  return true;
}

void StreamPairing::onClientStreamReadable(roles::StreamId id) {
  if (!peekedTestData(client_streams_, id, "client")) {
    return;
  }
  // Test data from the client: this connection is one of the client's senders.
  resolver_.clientSentData(id);
  settle(resolver_.takeSettled());
}

void StreamPairing::onServerStreamReady(net::UniqueFd fd) {
  if (stopped_) {
    return;
  }
  const roles::StreamId id = next_server_id_++;
  PendingStream& stream = server_streams_[id] = PendingStream{std::move(fd), 0, nullptr};
  resolver_.addServerStream(id);
  if (bidirectional_) {
    // Confirmation: the server's senders write as soon as the test runs, its receivers never do.
    watch(stream, [this, id] { onServerStreamReadable(id); });
  }
  settle(resolver_.takeSettled());
}

void StreamPairing::onServerStreamReadable(roles::StreamId id) {
  if (!peekedTestData(server_streams_, id, "backend")) {
    return;
  }
  if (!resolver_.serverSentData(id)) {
    backend_role_mismatch_ = true;
    spdlog::warn(
        "{} backend sent data on a connection it should receive on: the server's accept order "
        "differs from the proxy's dial order",
        log_prefix_);
  }
}

void StreamPairing::settle(const std::vector<roles::Pairing>& pairs) {
  // Downloads first: when pairings come together (the last sender's data makes every receiver
  // certain), the server's first bytes then reach the client before the proxy starts on the
  // uploads' backlog. iperf3's client counts what it receives only until its TEST_END, while the
  // uploads' bytes are all delivered before the server sees that TEST_END anyway.
  for (const roles::Flow flow : {roles::Flow::Download, roles::Flow::Upload}) {
    for (const roles::Pairing& pairing : pairs) {
      if (stopped_) {
        return;
      }
      if (pairing.flow != flow) {
        continue;
      }
      auto client = client_streams_.extract(pairing.client);
      auto server = server_streams_.extract(pairing.server);
      if (client.empty() || server.empty()) {
        continue;
      }
      retireWatch(client.mapped());
      retireWatch(server.mapped());
      callbacks_.on_paired(pairing.flow, std::move(client.mapped().fd),
                           std::move(server.mapped().fd));
    }
  }
  if (!stopped_ && !pairs.empty() && resolver_.allPaired()) {
    spdlog::debug("{} all {} data connections paired; roles repaired: {}, arrived out of order: {}",
                  log_prefix_, next_client_id_, resolver_.repairedRoles(),
                  resolver_.misorderedArrivals());
    callbacks_.on_all_paired();
  }
}

void StreamPairing::fail(CloseReason reason, std::string detail) {
  if (!stopped_) {
    stop();
    callbacks_.on_failed(reason, std::move(detail));
  }
}

}  // namespace iperf3proxy::proxy
