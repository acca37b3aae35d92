#include "pool/udp_setup_turns.h"

#include <algorithm>

namespace iperf3proxy::pool {

bool UdpSetupTurns::begin(const proto::Cookie& test, const std::string& client_host) {
  if (host_of_.contains(test)) {
    return holder(client_host) == test;
  }
  host_of_.emplace(test, client_host);
  Address& address = by_host_[client_host];
  if (!address.holder) {
    address.holder = test;
    return true;
  }
  address.waiting.push_back(test);
  return false;
}

std::optional<proto::Cookie> UdpSetupTurns::end(const proto::Cookie& test) {
  auto known = host_of_.find(test);
  if (known == host_of_.end()) {
    return std::nullopt;
  }
  const std::string host = known->second;
  host_of_.erase(known);
  auto it = by_host_.find(host);
  if (it == by_host_.end()) {
    return std::nullopt;
  }
  Address& address = it->second;
  std::optional<proto::Cookie> next;
  if (address.holder == test) {
    address.holder.reset();
    if (!address.waiting.empty()) {
      address.holder = address.waiting.front();
      address.waiting.pop_front();
      next = address.holder;
    }
  } else {
    std::erase(address.waiting, test);
  }
  if (!address.holder && address.waiting.empty()) {
    by_host_.erase(it);
  }
  return next;
}

std::optional<proto::Cookie> UdpSetupTurns::holder(const std::string& client_host) const {
  auto it = by_host_.find(client_host);
  return it == by_host_.end() ? std::nullopt : it->second.holder;
}

std::size_t UdpSetupTurns::waiting() const {
  std::size_t count = 0;
  for (const auto& [host, address] : by_host_) {
    count += address.waiting.size();
  }
  return count;
}

}  // namespace iperf3proxy::pool
