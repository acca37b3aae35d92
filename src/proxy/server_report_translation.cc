#include "proxy/server_report_translation.h"

#include <spdlog/spdlog.h>

#include "net/address.h"

namespace iperf3proxy::proxy {
namespace {

proto::Endpoint endpointOf(const net::Address& address) {
  return proto::Endpoint{address.hostString(), address.port()};
}

}  // namespace

void ServerReportTranslation::addConnection(proto::ConnectionView::Kind kind,
                                            int client_fd,
                                            int server_fd) {
  const auto client = net::peerAddress(client_fd);
  const auto client_target = net::localAddress(client_fd);
  const auto server_peer = net::localAddress(server_fd);
  if (!client || !client_target || !server_peer) {
    // A socket already reset: the server's report will show this one connection as the proxy's.
    spdlog::debug("{} cannot read the addresses of a connection for the server's report",
                  log_prefix_);
    return;
  }
  views_.push_back(
      {kind, endpointOf(*server_peer), endpointOf(*client), endpointOf(*client_target)});
}

std::optional<std::string> ServerReportTranslation::translate(std::string_view results_json) const {
  proto::TranslatedReport report = proto::translateServerReport(results_json, views_);
  if (!report.unreadable.empty()) {
    spdlog::warn("{} server results {} bytes: {}; forwarded untranslated", log_prefix_,
                 results_json.size(), report.unreadable);
    return std::nullopt;
  }
  if (report.unknown > 0) {
    spdlog::warn("{} server report: {} connection(s) the proxy did not relay keep their addresses",
                 log_prefix_, report.unknown);
  }
  spdlog::debug("{} server report: {} connection(s) shown with the client's addresses", log_prefix_,
                report.translated);
  return std::move(report.json);
}

}  // namespace iperf3proxy::proxy
