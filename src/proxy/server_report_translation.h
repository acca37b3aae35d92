#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/server_report.h"

namespace iperf3proxy::proxy {

// Makes the server's report (--get-server-output) name the client's addresses, as it would
// without the proxy. The session adds every connection of the test as it is set up, while both
// sockets are open; at EXCHANGE_RESULTS the control relay hands over the server's results JSON.
class ServerReportTranslation {
 public:
  explicit ServerReportTranslation(std::string log_prefix) : log_prefix_(std::move(log_prefix)) {}

  // Reads the addresses of both sockets of one relayed connection (TCP or connected UDP).
  void addConnection(proto::ConnectionView::Kind kind, int client_fd, int server_fd);

  // The results to forward instead, or nullopt to forward the server's own.
  std::optional<std::string> translate(std::string_view results_json) const;

 private:
  std::string log_prefix_;
  std::vector<proto::ConnectionView> views_;
};

}  // namespace iperf3proxy::proxy
