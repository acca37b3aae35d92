#pragma once

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>

#include "proto/cookie.h"

namespace iperf3proxy::pool {

// Gives the tests of one client address turns at setting up UDP streams.
//
// Why: a UDP stream carries no cookie. The proxy learns which test a new flow belongs to only from
// its source address, so two tests from one address (a NAT, or one host running two tests) that
// set up UDP streams at the same time would be ambiguous. iperf3's UDP setup is short and
// lock-step (docs/PROTOCOL.md §4.3), so the proxy holds a test's CREATE_STREAMS back from its
// client until no other test from that address is setting up UDP streams: then every new flow
// from the address belongs to the one test whose turn it is. Pure logic.
class UdpSetupTurns {
 public:
  // Returns true if `test` may set up now; otherwise it waits (first come, first served).
  bool begin(const proto::Cookie& test, const std::string& client_host);

  // The test is done setting up, or went away (waiting or not). Returns the test whose turn
  // it is now, if one was waiting on that address.
  std::optional<proto::Cookie> end(const proto::Cookie& test);

  // The test setting up UDP streams from this address, if any.
  std::optional<proto::Cookie> holder(const std::string& client_host) const;

  std::size_t waiting() const;

 private:
  struct Address {
    std::optional<proto::Cookie> holder;
    std::deque<proto::Cookie> waiting;
  };

  std::map<std::string, Address> by_host_;
  std::unordered_map<proto::Cookie, std::string, proto::CookieHash> host_of_;
};

}  // namespace iperf3proxy::pool
