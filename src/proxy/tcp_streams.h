#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ev/io_event.h"
#include "net/address.h"
#include "net/unique_fd.h"
#include "proto/cookie.h"
#include "proto/test_params.h"
#include "proxy/close_reason.h"
#include "proxy/stream_pairing.h"
#include "proxy/stream_relay.h"

namespace iperf3proxy::proxy {

// The data connections of one TCP test, from the client's first data connection to the last
// byte: StreamPairing pairs each with a backend connection of the same role, a StreamRelay
// splices every pair, and at TEST_END the uploads are drained into the server before the
// client's TEST_END may follow them.
class TcpStreams {
 public:
  struct Callbacks {
    // A pair is about to be relayed (for the server's report: both sockets are open).
    std::function<void(int client_fd, int server_fd)> on_relay;
    // Every data connection of the test is paired.
    std::function<void()> on_all_paired;
    // The test cannot go on.
    std::function<void(CloseReason reason, std::string detail)> on_failed;
  };

  TcpStreams(ev::EventLoop& loop,
             const proto::TestParams& params,
             const net::Address& backend,
             const proto::Cookie& cookie,
             long backend_connect_ms,
             std::string log_prefix,
             std::shared_ptr<PipePool> pipes,  // where the relays' pipes come from
             Callbacks callbacks);
  ~TcpStreams();
  TcpStreams(const TcpStreams&) = delete;
  TcpStreams& operator=(const TcpStreams&) = delete;

  // A client data connection of this test; the session has checked that the test wants it.
  void add(net::UniqueFd fd, const net::Address& peer);

  // The role deadline (see StreamPairing::settleByGuess).
  bool settleByGuess() { return pairing_.settleByGuess(); }

  // Calls `drained` once the test data the client sent so far has reached the server's TCP on
  // every upload stream (at once if there is none), or after `deadline_ms` at the latest. At
  // most one drain per test: a deadline cannot be pushed back. See
  // SplicePump::drainFirstToSecond.
  void drainUploads(long deadline_ms, std::function<void()> drained);

  // Stops everything; no callback after this.
  void stop();

  bool allPaired() const { return pairing_.allPaired(); }

  int clientStreams() const { return pairing_.clientStreams(); }

  int serverStreams() const { return pairing_.serverStreams(); }

  std::uint64_t bytesUp() const;
  std::uint64_t bytesDown() const;

  const StreamPairing& pairing() const { return pairing_; }

 private:
  void startRelay(roles::Flow flow, net::UniqueFd client, net::UniqueFd server);
  void onRelayDone(StreamRelay& relay, const SplicePump::Completion& completion);
  void onUploadDrained();
  void endDrain();

  ev::EventLoop& loop_;
  std::string log_prefix_;
  std::shared_ptr<PipePool> pipes_;
  Callbacks callbacks_;
  bool stopped_ = false;
  std::uint64_t finished_up_ = 0;  // bytes of relays that have ended
  std::uint64_t finished_down_ = 0;
  int uploads_draining_ = 0;
  bool drain_started_ = false;
  std::function<void()> drained_;
  std::vector<std::unique_ptr<StreamRelay>> relays_;
  ev::Timer drain_deadline_;
  StreamPairing pairing_;  // last: its callbacks use the members above
};

}  // namespace iperf3proxy::proxy
