#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "ev/event_loop.h"
#include "net/unique_fd.h"
#include "proxy/splice_pump.h"
#include "roles/role_resolver.h"

namespace iperf3proxy::proxy {

// One paired data connection: the client's connection, the backend connection the server gave
// the matching role, and the pump between them. Owns both sockets.
class StreamRelay : public ev::DeferredDeletable {
 public:
  using DoneCallback = std::function<void(StreamRelay&, const SplicePump::Completion&)>;

  StreamRelay(ev::EventLoop& loop,
              int index,
              roles::Flow flow,
              net::UniqueFd client,
              net::UniqueFd server,
              std::shared_ptr<PipePool> pipes,  // null: pipes of the pump's own
              DoneCallback done);

  // Returns false if the pump could not start (no pipes); errno is set.
  bool start();

  // See SplicePump::drainFirstToSecond: client-to-server bytes reach the server's TCP. At most
  // once per relay.
  void drainUpload(std::function<void()> done) { pump_.drainFirstToSecond(std::move(done)); }

  // The session stopped waiting for the drain (its deadline): the pump's drain ticks stop too.
  void stopDrain() { pump_.stopDrain(); }

  bool draining() const { return pump_.draining(); }

  // No more I/O and no completion (the test is closing).
  void stop() { pump_.stop(); }

  int index() const { return index_; }

  roles::Flow flow() const { return flow_; }

  std::uint64_t bytesFromClient() const { return pump_.bytesFirstToSecond(); }

  std::uint64_t bytesFromServer() const { return pump_.bytesSecondToFirst(); }

 private:
  int index_;
  roles::Flow flow_;
  net::UniqueFd client_;
  net::UniqueFd server_;
  SplicePump pump_;  // declared after the sockets it borrows: destroyed before them
};

}  // namespace iperf3proxy::proxy
