#include "proto/server_report.h"

#include <algorithm>
#include <charconv>

#include <nlohmann/json.hpp>

namespace iperf3proxy::proto {
namespace {

// Keeps the members in the server's order.
using Json = nlohmann::ordered_json;

class Translator {
 public:
  explicit Translator(std::span<const ConnectionView> views) : views_(views) {}

  const ConnectionView* find(ConnectionView::Kind kind, const Endpoint& server_peer) {
    for (const ConnectionView& view : views_) {
      if (view.kind == kind && view.server_peer == server_peer) {
        ++translated_;
        return &view;
      }
    }
    ++unknown_;
    return nullptr;
  }

  int translated() const { return translated_; }

  int unknown() const { return unknown_; }

 private:
  std::span<const ConnectionView> views_;
  int translated_ = 0;
  int unknown_ = 0;
};

std::optional<Endpoint> endpointFrom(const Json& object,
                                     const char* host_key,
                                     const char* port_key) {
  const auto host = object.find(host_key);
  const auto port = object.find(port_key);
  if (host == object.end() || port == object.end() || !host->is_string() ||
      !port->is_number_integer()) {
    return std::nullopt;
  }
  const auto value = port->get<std::int64_t>();
  if (value < 0 || value > 65535) {
    return std::nullopt;
  }
  return Endpoint{host->get<std::string>(), static_cast<std::uint16_t>(value)};
}

void translateJsonReport(Json& report, Translator& translator) {
  if (!report.is_object() || !report.contains("start") || !report["start"].is_object()) {
    return;
  }
  Json& start = report["start"];
  if (auto accepted = start.find("accepted_connection");
      accepted != start.end() && accepted->is_object()) {
    if (const auto peer = endpointFrom(*accepted, "host", "port")) {
      if (const ConnectionView* view = translator.find(ConnectionView::Kind::Control, *peer)) {
        (*accepted)["host"] = view->client.host;
        (*accepted)["port"] = view->client.port;
      }
    }
  }
  auto connected = start.find("connected");
  if (connected == start.end() || !connected->is_array()) {
    return;
  }
  for (Json& connection : *connected) {
    if (!connection.is_object()) {
      continue;
    }
    if (const auto peer = endpointFrom(connection, "remote_host", "remote_port")) {
      if (const ConnectionView* view = translator.find(ConnectionView::Kind::Data, *peer)) {
        connection["local_host"] = view->client_target.host;
        connection["local_port"] = view->client_target.port;
        connection["remote_host"] = view->client.host;
        connection["remote_port"] = view->client.port;
      }
    }
  }
}

std::optional<std::uint16_t> parsePort(std::string_view digits) {
  unsigned value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (error != std::errc() || end != digits.data() + digits.size() || digits.empty() ||
      value > 65535) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

// "Accepted connection from HOST, port PORT". Whatever precedes it (a server with --timestamps
// starts every line with the time) is kept.
std::optional<std::string> translateAcceptedLine(std::string_view line, Translator& translator) {
  constexpr std::string_view kLead = "Accepted connection from ";
  constexpr std::string_view kPort = ", port ";
  const std::size_t lead_at = line.find(kLead);
  if (lead_at == std::string_view::npos) {
    return std::nullopt;
  }
  const std::size_t host_at = lead_at + kLead.size();
  const std::size_t port_at = line.find(kPort, host_at);
  if (port_at == std::string_view::npos) {
    return std::nullopt;
  }
  const auto port = parsePort(line.substr(port_at + kPort.size()));
  if (!port) {
    return std::nullopt;
  }
  const Endpoint peer{std::string(line.substr(host_at, port_at - host_at)), *port};
  const ConnectionView* view = translator.find(ConnectionView::Kind::Control, peer);
  if (view == nullptr) {
    return std::nullopt;
  }
  return std::string(line.substr(0, host_at)) + view->client.host + std::string(kPort) +
         std::to_string(view->client.port);
}

// "[ ID] local HOST port PORT connected to HOST port PORT"; everything up to "local " (the
// stream id, and a timestamp with --timestamps) is kept as it is.
std::optional<std::string> translateConnectedLine(std::string_view line, Translator& translator) {
  constexpr std::string_view kLocal = "] local ";
  constexpr std::string_view kPort = " port ";
  constexpr std::string_view kTo = " connected to ";
  const std::size_t local_at = line.find(kLocal);
  const std::size_t to_at = line.find(kTo);
  if (local_at == std::string_view::npos || to_at == std::string_view::npos || to_at < local_at) {
    return std::nullopt;
  }
  const std::string_view remote = line.substr(to_at + kTo.size());
  const std::size_t remote_port_at = remote.find(kPort);
  if (remote_port_at == std::string_view::npos) {
    return std::nullopt;
  }
  const auto port = parsePort(remote.substr(remote_port_at + kPort.size()));
  if (!port) {
    return std::nullopt;
  }
  const Endpoint peer{std::string(remote.substr(0, remote_port_at)), *port};
  const ConnectionView* view = translator.find(ConnectionView::Kind::Data, peer);
  if (view == nullptr) {
    return std::nullopt;
  }
  return std::string(line.substr(0, local_at + kLocal.size())) + view->client_target.host +
         std::string(kPort) + std::to_string(view->client_target.port) + std::string(kTo) +
         view->client.host + std::string(kPort) + std::to_string(view->client.port);
}

std::string translateTextReport(std::string_view text, Translator& translator) {
  std::string out;
  out.reserve(text.size() + 64);
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    auto translated = translateAcceptedLine(line, translator);
    if (!translated) {
      translated = translateConnectedLine(line, translator);
    }
    out += translated ? *translated : std::string(line);
    if (end == std::string_view::npos) {
      break;
    }
    out += '\n';
    text.remove_prefix(end + 1);
  }
  return out;
}

// The deepest nesting of arrays and objects, strings skipped; a bound for parsing and dumping.
int nestingDepth(std::string_view json) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  bool escaped = false;
  for (const char c : json) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

TranslatedReport translateServerReport(std::string_view results_json,
                                       std::span<const ConnectionView> views) {
  TranslatedReport outcome;
  if (nestingDepth(results_json) > kMaxReportDepth) {
    outcome.unreadable = "nested too deeply";
    return outcome;
  }
  Json root = Json::parse(results_json.begin(), results_json.end(), nullptr,
                          /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    outcome.unreadable = "not a JSON object this parser reads";
    return outcome;
  }
  Translator translator(views);
  if (auto report = root.find("server_output_json"); report != root.end()) {
    translateJsonReport(*report, translator);
  }
  if (auto report = root.find("server_output_text"); report != root.end() && report->is_string()) {
    *report = translateTextReport(report->get_ref<const std::string&>(), translator);
  }
  outcome.translated = translator.translated();
  outcome.unknown = translator.unknown();
  if (outcome.translated > 0) {
    outcome.json = root.dump(-1, ' ', false, Json::error_handler_t::replace);
  }
  return outcome;
}

}  // namespace iperf3proxy::proto
