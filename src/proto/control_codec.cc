#include "proto/control_codec.h"

#include <algorithm>
#include <string_view>
#include <utility>

namespace iperf3proxy::proto {
namespace {

std::int32_t readBigEndian32(const std::uint8_t* p) {
  const std::uint32_t value = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                              (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
  return static_cast<std::int32_t>(value);
}

}  // namespace

std::string_view codecErrorName(CodecError error) {
  switch (error) {
    case CodecError::BadCookie:
      return "bad cookie";
    case CodecError::UnknownState:
      return "unexpected state byte";
    case CodecError::OutOfOrder:
      return "message out of order";
    case CodecError::JsonEmpty:
      return "empty JSON message";
    case CodecError::JsonTooLarge:
      return "JSON message too large";
    case CodecError::TruncatedMessage:
      return "message cut short";
  }
  return "unknown";
}

ControlCodec::ControlCodec(CodecLimits limits) : limits_(limits) {
  client_.expect = Expect::Cookie;
}

std::uint32_t ControlCodec::capFor(JsonKind kind) const {
  return kind == JsonKind::Params ? limits_.max_params_json : limits_.max_results_json;
}

CodecFailure ControlCodec::fail(Side side, CodecError error, std::string detail) const {
  const Direction& d = side == Side::Client ? client_ : server_;
  return CodecFailure{error, side, d.offset, std::move(detail)};
}

std::string ControlCodec::withStage(std::string what) const {
  return what + "; stage: " + order_.stage();
}

void ControlCodec::syncExpectations() {
  for (Direction* d : {&client_, &server_}) {
    const bool between_messages =
        d->expect == Expect::State || (d->expect == Expect::JsonLength && d->partial.empty());
    if (!between_messages) {
      continue;
    }
    if (const auto due = order_.jsonDue(d == &client_ ? Side::Client : Side::Server)) {
      d->expect = Expect::JsonLength;
      d->json_kind = *due;
    } else {
      d->expect = Expect::State;
    }
  }
}

FeedResult ControlCodec::feed(Side side, std::span<const std::uint8_t> bytes) {
  FeedResult result;
  if (failure_) {
    result.failure = failure_;
    return result;
  }
  // On failure `step` leaves `pos` on the offending byte, which is then neither consumed nor
  // counted in the side's offset.
  const std::uint64_t start_offset = dir(side).offset;
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    if (auto failure = step(side, bytes, pos, result.events)) {
      failure->offset = start_offset + pos;
      failure_ = failure;
      result.failure = failure;
      break;
    }
  }
  dir(side).offset = start_offset + pos;
  result.consumed = pos;
  return result;
}

std::optional<CodecFailure> ControlCodec::step(Side side,
                                               std::span<const std::uint8_t> bytes,
                                               std::size_t& pos,
                                               std::vector<ControlEvent>& events) {
  Direction& d = dir(side);
  switch (d.expect) {
    case Expect::Cookie: {
      const std::size_t take = std::min(kCookieSize - d.partial.size(), bytes.size() - pos);
      const auto chunk = bytes.subspan(pos, take);
      const std::size_t at = d.partial.size();
      d.partial.insert(d.partial.end(), chunk.begin(), chunk.end());
      // Garbage is refused at its first bad byte, which is left unconsumed.
      if (const auto bad = firstInvalidCookieByte(d.partial)) {
        const CookieDefect defect = checkCookie(d.partial);
        pos += *bad - at;
        d.partial.resize(*bad);
        return fail(side, CodecError::BadCookie, std::string(cookieDefectName(defect)));
      }
      pos += take;
      if (d.partial.size() == kCookieSize) {
        events.push_back(CookieReceived{*Cookie::parse(d.partial)});
        d.partial.clear();
        d.expect = Expect::State;
        order_.recordCookie();
      }
      return std::nullopt;
    }
    case Expect::State:
      if (auto failure = onStateByte(side, bytes[pos], events)) {
        return failure;
      }
      ++pos;
      return std::nullopt;
    case Expect::JsonLength:
      // `d.offset` is the side's offset at the start of this feed (see feed()).
      if (auto failure = onJsonLengthByte(side, bytes[pos], d.offset + pos, events)) {
        return failure;
      }
      ++pos;
      return std::nullopt;
    case Expect::JsonBody: {
      const auto take =
          static_cast<std::uint32_t>(std::min<std::size_t>(d.json_remaining, bytes.size() - pos));
      // Results are only counted unless captured: they can be megabytes and the proxy needs
      // their content only to translate the server's report.
      if (d.json_kind == JsonKind::Params || d.capturing) {
        const auto chunk = bytes.subspan(pos, take);
        d.partial.insert(d.partial.end(), chunk.begin(), chunk.end());
      }
      d.json_remaining -= take;
      pos += take;
      if (d.json_remaining == 0) {
        onJsonComplete(side, events);
      }
      return std::nullopt;
    }
    case Expect::ErrorPayload: {
      const std::size_t take =
          std::min(kServerErrorPayloadSize - d.partial.size(), bytes.size() - pos);
      const auto chunk = bytes.subspan(pos, take);
      d.partial.insert(d.partial.end(), chunk.begin(), chunk.end());
      pos += take;
      if (d.partial.size() == kServerErrorPayloadSize) {
        events.push_back(ServerErrorReceived{readBigEndian32(d.partial.data()),
                                             readBigEndian32(d.partial.data() + 4)});
        d.partial.clear();
        d.expect = Expect::State;
        syncExpectations();
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::optional<CodecFailure> ControlCodec::onStateByte(Side side,
                                                      std::uint8_t byte,
                                                      std::vector<ControlEvent>& events) {
  const State state = stateFromWire(byte);
  if (!ControlOrder::sends(side, state)) {
    return fail(side, CodecError::UnknownState,
                withStage("byte " + std::to_string(static_cast<int>(byte)) + " is not a " +
                          std::string(sideName(side)) + " state"));
  }
  // A server state before the client's cookie would set an expectation on a client stream that
  // has not begun (e.g. params in place of the cookie). Found by fuzz/control_codec_fuzz.cc
  // (corpus crash-90f7952d...); ControlOrder refuses it.
  if (auto why = order_.refusal(side, state)) {
    return fail(side, CodecError::OutOfOrder,
                withStage(std::string(stateName(state)) + " " + *why));
  }
  order_.record(side, state);
  events.push_back(StateReceived{side, state});
  if (state == State::ServerError) {
    dir(side).expect = Expect::ErrorPayload;
    dir(side).partial.clear();
  }
  syncExpectations();
  return std::nullopt;
}

std::optional<CodecFailure> ControlCodec::onJsonLengthByte(Side side,
                                                           std::uint8_t byte,
                                                           std::uint64_t byte_offset,
                                                           std::vector<ControlEvent>& events) {
  Direction& d = dir(side);
  const std::uint32_t cap = capFor(d.json_kind);
  // A peer that gives up instead of sending its JSON sends a state byte (e.g. IPERF_DONE, or
  // SERVER_ERROR). As the top byte of a length it would announce more than the cap allows, so
  // such a byte can only be a state message.
  if (d.partial.empty() && (std::uint64_t{byte} << 24) > cap &&
      ControlOrder::sends(side, stateFromWire(byte))) {
    d.expect = Expect::State;
    return onStateByte(side, byte, events);
  }
  if (d.partial.empty()) {
    if (auto why = order_.jsonRefusal(side)) {
      return fail(side, CodecError::OutOfOrder, withStage(*why));
    }
    d.message_offset = byte_offset;
    d.capturing = d.capture && d.json_kind == JsonKind::Results;
    d.capture_skipped = false;
  }
  d.partial.push_back(byte);
  if (d.partial.size() < 4) {
    return std::nullopt;
  }
  const auto length = static_cast<std::uint32_t>(readBigEndian32(d.partial.data()));
  d.partial.clear();
  if (length == 0) {
    return fail(side, CodecError::JsonEmpty, "JSON length 0");
  }
  if (length > cap) {
    return fail(side, CodecError::JsonTooLarge,
                "JSON length " + std::to_string(length) + " above cap " + std::to_string(cap));
  }
  d.json_length = length;
  d.json_remaining = length;
  d.expect = Expect::JsonBody;
  if (d.capturing && length > limits_.max_captured_results) {
    // Too large to translate: the message streams through like any other (the hold ends here).
    d.capturing = false;
    d.capture_skipped = true;
  }
  if (d.json_kind == JsonKind::Params) {
    d.partial.reserve(length);
  } else if (d.capturing) {
    // The cap bounds the size; growing from a modest reservation avoids committing it up front
    // on a length the body may never fill.
    d.partial.reserve(std::min<std::uint32_t>(length, 1U << 20));
  }
  return std::nullopt;
}

void ControlCodec::onJsonComplete(Side side, std::vector<ControlEvent>& events) {
  Direction& d = dir(side);
  if (d.json_kind == JsonKind::Results) {
    ResultsReceived results{side, d.json_length, d.message_offset, std::nullopt, d.capture_skipped};
    if (d.capturing) {
      results.json.emplace(reinterpret_cast<const char*>(d.partial.data()), d.partial.size());
      d.capturing = false;
    }
    events.push_back(std::move(results));
  } else {
    const std::string_view json(reinterpret_cast<const char*>(d.partial.data()), d.partial.size());
    auto parsed = parseTestParams(json);
    if (auto* params = std::get_if<TestParams>(&parsed)) {
      events.push_back(ParamsReceived{std::move(*params), d.json_length});
    } else {
      events.push_back(ParamsRejected{std::get<ParamsFailure>(std::move(parsed))});
    }
  }
  d.partial.clear();
  d.partial.shrink_to_fit();
  d.expect = Expect::State;
  order_.recordJson(side);
  syncExpectations();
}

std::optional<std::uint64_t> ControlCodec::serverResultsCaptureStart() const {
  if (server_.capturing) {
    return server_.message_offset;
  }
  return std::nullopt;
}

FeedResult ControlCodec::finish(Side side) {
  FeedResult result;
  if (failure_) {
    result.failure = failure_;
    return result;
  }
  Direction& d = dir(side);
  switch (d.expect) {
    case Expect::State:
      return result;
    case Expect::JsonLength:
      if (d.partial.empty()) {
        return result;  // the peer closed instead of answering; the session sees the close
      }
      break;
    case Expect::ErrorPayload:
      if (d.partial.size() >= 4) {
        result.events.push_back(
            ServerErrorReceived{readBigEndian32(d.partial.data()), std::nullopt});
        d.partial.clear();
        d.expect = Expect::State;
        syncExpectations();
        return result;
      }
      break;
    case Expect::Cookie:
    case Expect::JsonBody:
      break;
  }
  failure_ = fail(side, CodecError::TruncatedMessage, "end of stream inside a message");
  result.failure = failure_;
  return result;
}

}  // namespace iperf3proxy::proto
