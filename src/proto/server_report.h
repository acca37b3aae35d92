#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace iperf3proxy::proto {

// A host and port as iperf3 prints them: numeric host, IPv4-mapped IPv6 shown as IPv4, no
// brackets.
struct Endpoint {
  std::string host;
  std::uint16_t port = 0;

  bool operator==(const Endpoint&) const = default;
};

// One connection of a test (control, TCP data or UDP flow), seen from both ends of the proxy.
// Through the proxy the server reports its own socket's addresses, which are the proxy's; directly
// it would report the client's.
struct ConnectionView {
  // The control connection appears in the report's "accepted" entry, data connections (TCP or
  // UDP) in its "connected" entries. Matching within the kind matters: a UDP flow's port number
  // may equal the TCP control connection's.
  enum class Kind { Control, Data };
  Kind kind = Kind::Data;
  Endpoint server_peer;    // the proxy's backend-side socket: what the server calls "remote"
  Endpoint client;         // the client's socket: what the server would call "remote" directly
  Endpoint client_target;  // the address the client connected to: the server's "local" directly
};

struct TranslatedReport {
  std::optional<std::string> json;  // the results to forward instead of the server's
  int translated = 0;               // connections found in the report and translated
  int unknown = 0;                  // connections in the report that match no view (left alone)
  std::string_view unreadable;      // why the results could not be read, if they could not
};

// Deeper JSON is left alone: re-serialising recurses once per level.
inline constexpr int kMaxReportDepth = 64;

// With --get-server-output the server's results JSON carries the server's own report of the test:
// `server_output_json` (a server with -J) or `server_output_text`. Both name the addresses and
// ports of every connection, which through a proxy are the proxy's. This rewrites exactly those:
//   JSON: start.accepted_connection {host, port}; start.connected[] {local_host, local_port,
//         remote_host, remote_port}
//   text: "Accepted connection from H, port P" and "[ ID] local H port P connected to H port P"
// matching each by the server's remote endpoint. Everything else keeps its value (the document is
// re-serialised, so number formatting may differ from the server's while meaning the same).
//
// When nothing is translated (no report, no connection of it matches, or JSON this parser does not
// take: invalid UTF-8, nesting deeper than kMaxReportDepth) `json` is empty and the caller
// forwards the server's own bytes.
TranslatedReport translateServerReport(std::string_view results_json,
                                       std::span<const ConnectionView> views);

}  // namespace iperf3proxy::proto
