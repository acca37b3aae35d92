#include "proxy/udp_streams.h"

namespace iperf3proxy::proxy {

UdpStreams::UdpStreams(ev::EventLoop& loop,
                       LoopDatagramIo io,
                       net::Address backend,
                       int expected_flows)
    : loop_(loop), io_(std::move(io)), backend_(backend), expected_(expected_flows) {}

const UdpFlow* UdpStreams::open(const net::Address& proxy_local,
                                const net::Address& source,
                                std::span<const std::uint8_t> first_datagram,
                                std::string* error) {
  auto flow = UdpFlow::open(loop_, io_, proxy_local, source, backend_, first_datagram, error);
  if (!flow) {
    return nullptr;
  }
  flows_.push_back(std::move(flow));
  return flows_.back().get();
}

bool UdpStreams::route(const net::Address& source, std::span<const std::uint8_t> datagram) {
  for (const auto& flow : flows_) {
    if (flow->client().port() == source.port() &&
        flow->client().hostString() == source.hostString()) {
      flow->fromClient(datagram);
      return true;
    }
  }
  return false;
}

void UdpStreams::stop() {
  for (const auto& flow : flows_) {
    flow->stop();
  }
}

std::uint64_t UdpStreams::bytesUp() const {
  std::uint64_t total = 0;
  for (const auto& flow : flows_) {
    total += flow->bytesFromClient();
  }
  return total;
}

std::uint64_t UdpStreams::bytesDown() const {
  std::uint64_t total = 0;
  for (const auto& flow : flows_) {
    total += flow->bytesFromServer();
  }
  return total;
}

std::uint64_t UdpStreams::dropped() const {
  std::uint64_t total = 0;
  for (const auto& flow : flows_) {
    total += flow->dropped();
  }
  return total;
}

}  // namespace iperf3proxy::proxy
