#include "proxy/control_relay.h"

#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <utility>

#include "net/socket_ops.h"
#include "proto/wire.h"
#include "proxy/settings.h"

namespace iperf3proxy::proxy {
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kHighWatermark = fixed::kControlHighWatermarkBytes;

}  // namespace

ControlRelay::ControlRelay(ev::EventLoop& loop,
                           net::UniqueFd client,
                           net::UniqueFd server,
                           proto::CodecLimits limits,
                           ControlRelayCallbacks& callbacks)
    : loop_(loop),
      callbacks_(callbacks),
      client_(std::move(client)),
      server_(std::move(server)),
      codec_(limits) {
  net::setNoDelay(client_.get());
  net::setNoDelay(server_.get());
  from_client_.side = proto::Side::Client;
  from_client_.from = client_.get();
  from_client_.to = server_.get();
  from_server_.side = proto::Side::Server;
  from_server_.from = server_.get();
  from_server_.to = client_.get();
  for (Direction* d : {&from_client_, &from_server_}) {
    d->readable = std::make_unique<ev::IoEvent>(loop_, d->from, ev::IoEvent::Kind::Read,
                                                [this, d] { onReadable(*d); });
    d->writable = std::make_unique<ev::IoEvent>(loop_, d->to, ev::IoEvent::Kind::Write,
                                                [this, d] { onWritable(*d); });
  }
}

void ControlRelay::start(std::span<const std::uint8_t> cookie) {
  if (!decodeAndQueue(from_client_, cookie)) {
    return;
  }
  flush(from_client_);
  if (stopped_) {
    return;
  }
  from_client_.readable->enable();
  from_server_.readable->enable();
}

void ControlRelay::startAnswered(std::span<const std::uint8_t> cookie,
                                 std::span<const std::uint8_t> answer) {
  const proto::FeedResult sent = codec_.feedClient(cookie);
  from_client_.bytes += sent.consumed;
  for (const auto& event : sent.events) {
    callbacks_.onControlEvent(event);
    if (stopped_) {
      return;
    }
  }
  if (sent.failure) {
    stop();
    callbacks_.onControlProtocolError(*sent.failure);
    return;
  }
  if (!decodeAndQueue(from_server_, answer)) {
    return;
  }
  flush(from_server_);
  if (stopped_) {
    return;
  }
  from_client_.readable->enable();
  from_server_.readable->enable();
}

void ControlRelay::stop() {
  stopped_ = true;
  for (Direction* d : {&from_client_, &from_server_}) {
    d->readable->disable();
    d->writable->disable();
  }
}

void ControlRelay::holdClientToServer(HeldOverflow overflow) {
  client_to_server_held_ = true;
  held_overflow_ = std::move(overflow);
}

void ControlRelay::releaseClientToServer() {
  if (client_to_server_held_) {
    client_to_server_held_ = false;
    held_overflow_ = nullptr;
    if (!stopped_) {
      flush(from_client_);
    }
  }
}

void ControlRelay::holdServerToClient() {
  server_to_client_held_ = true;
}

void ControlRelay::releaseServerToClient() {
  if (server_to_client_held_) {
    server_to_client_held_ = false;
    if (!stopped_) {
      flush(from_server_);
    }
  }
}

void ControlRelay::translateServerResults(ResultsTranslator translate) {
  translate_results_ = std::move(translate);
  codec_.captureServerResults();
}

net::UniqueFd ControlRelay::releaseClient() {
  // Disabled events never touch their fd again, even while they wait to be freed with the relay
  // (one of them may be the event whose callback is running now).
  stop();
  return std::move(client_);
}

void ControlRelay::sendToClientNow(std::span<const std::uint8_t> bytes) {
  // A few bytes into a socket whose send buffer is (nearly) empty: this does not block and, in
  // practice, never writes short. If it does, the client sees the close that follows instead.
  (void)::send(client_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void ControlRelay::onReadable(Direction& d) {
  std::array<std::uint8_t, kReadChunk> buffer{};
  const ssize_t n = ::recv(d.from, buffer.data(), buffer.size(), MSG_DONTWAIT);
  if (n > 0) {
    if (!decodeAndQueue(d, std::span(buffer.data(), static_cast<std::size_t>(n)))) {
      return;
    }
    flush(d);
    return;
  }
  if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
    return;
  }
  if (n == -1) {
    const int error = errno;
    stop();
    callbacks_.onControlError(d.side, error);
    return;
  }
  // EOF from this side.
  d.eof = true;
  d.readable->disable();
  const proto::FeedResult result = codec_.finish(d.side);
  for (const auto& event : result.events) {
    callbacks_.onControlEvent(event);
    if (stopped_) {
      return;
    }
  }
  if (result.failure) {
    stop();
    callbacks_.onControlProtocolError(*result.failure);
    return;
  }
  flush(d);
}

bool ControlRelay::decodeAndQueue(Direction& d, std::span<const std::uint8_t> bytes) {
  const proto::FeedResult result =
      d.side == proto::Side::Client ? codec_.feedClient(bytes) : codec_.feedServer(bytes);
  const proto::ResultsReceived* captured = nullptr;
  for (const auto& event : result.events) {
    callbacks_.onControlEvent(event);
    if (stopped_) {
      return false;
    }
    if (const auto* results = std::get_if<proto::ResultsReceived>(&event);
        results && results->json) {
      captured = results;
    }
  }
  d.queue.insert(d.queue.end(), bytes.begin(),
                 bytes.begin() + static_cast<std::ptrdiff_t>(result.consumed));
  d.bytes += result.consumed;
  if (captured != nullptr) {
    replaceServerResults(*captured);
  }
  if (result.failure) {
    // Deliver what was valid before the offending byte? No: the session closes both legs at once,
    // and a half-delivered message helps nobody. Report and stop.
    stop();
    callbacks_.onControlProtocolError(*result.failure);
    return false;
  }
  if (&d == &from_client_ && client_to_server_held_) {
    const std::size_t held = d.queue.size() - d.queue_head;
    if (held > kMaxHeldBytes) {
      stop();
      if (auto overflow = std::exchange(held_overflow_, nullptr)) {
        overflow(held);
      }
      return false;
    }
  }
  return true;
}

void ControlRelay::replaceServerResults(const proto::ResultsReceived& results) {
  // The whole message is still queued (sendableEnd held it back); the queue ends at stream offset
  // `bytes`.
  Direction& d = from_server_;
  const std::uint64_t message_size = 4 + std::uint64_t{results.json_size};
  const std::uint64_t queued_since_message = d.bytes - results.message_offset;
  if (!translate_results_ || queued_since_message > d.queue.size() - d.queue_head) {
    return;  // defensive: part of the message already left; the rest goes as it is
  }
  const std::size_t begin = d.queue.size() - static_cast<std::size_t>(queued_since_message);
  const std::optional<std::string> translated = translate_results_(*results.json);
  if (!translated) {
    return;
  }
  const std::vector<std::uint8_t> message = proto::encodeJsonMessage(*translated);
  const auto first = d.queue.begin() + static_cast<std::ptrdiff_t>(begin);
  d.queue.erase(first, first + static_cast<std::ptrdiff_t>(message_size));
  d.queue.insert(d.queue.begin() + static_cast<std::ptrdiff_t>(begin), message.begin(),
                 message.end());
}

std::size_t ControlRelay::sendableEnd(const Direction& d) const {
  if (&d == &from_server_) {
    if (const auto capture_start = codec_.serverResultsCaptureStart()) {
      // The queue ends at stream offset `bytes`; hold everything from the message's start.
      const std::uint64_t held = d.bytes - *capture_start;
      return held > d.queue.size() - d.queue_head ? d.queue_head
                                                  : d.queue.size() - static_cast<std::size_t>(held);
    }
  }
  return d.queue.size();
}

void ControlRelay::onWritable(Direction& d) {
  flush(d);
}

void ControlRelay::flush(Direction& d) {
  if (&d == &from_server_ && server_to_client_held_ && d.eof) {
    // The server closed while its bytes wait for the client's UDP turn (it closes once the
    // client has gone, or when it dies): the test cannot go on. Passing on what waits would let
    // the client open flows out of turn, so the control exchange ends here instead of at the
    // stream-setup deadline.
    finished_ = true;
    stop();
    callbacks_.onControlFinished();
    return;
  }
  if ((&d == &from_client_ && client_to_server_held_) ||
      (&d == &from_server_ && server_to_client_held_)) {
    return;
  }
  const std::size_t end = sendableEnd(d);
  while (d.queue_head < end) {
    const ssize_t n = ::send(d.to, d.queue.data() + d.queue_head, end - d.queue_head,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      d.queue_head += static_cast<std::size_t>(n);
      continue;
    }
    if (n == -1 && errno == EINTR) {
      continue;
    }
    if (n == -1 && errno == EAGAIN) {
      d.writable->enable();
      if (d.queue.size() - d.queue_head > kHighWatermark) {
        d.readable->disable();
      }
      return;
    }
    const int error = errno;
    stop();
    callbacks_.onControlError(
        d.side == proto::Side::Client ? proto::Side::Server : proto::Side::Client, error);
    return;
  }
  if (d.queue_head < d.queue.size()) {
    // The rest is a results message still arriving: keep reading (its size is capped) and send
    // it once it is complete and translated.
    d.writable->disable();
    if (!stopped_ && !d.eof) {
      d.readable->enable();
    }
    return;
  }
  d.queue.clear();
  d.queue_head = 0;
  d.writable->disable();
  if (!d.eof) {
    if (!stopped_) {
      d.readable->enable();
    }
    return;
  }
  if (!d.shut) {
    d.shut = true;
    (void)::shutdown(d.to, SHUT_WR);
  }
  maybeFinish();
}

void ControlRelay::maybeFinish() {
  if (!finished_ && from_client_.shut && from_server_.shut) {
    finished_ = true;
    stop();
    callbacks_.onControlFinished();
  }
}

}  // namespace iperf3proxy::proxy
