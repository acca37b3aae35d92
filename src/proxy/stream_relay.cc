#include "proxy/stream_relay.h"

namespace iperf3proxy::proxy {

StreamRelay::StreamRelay(ev::EventLoop& loop,
                         int index,
                         roles::Flow flow,
                         net::UniqueFd client,
                         net::UniqueFd server,
                         std::shared_ptr<PipePool> pipes,
                         DoneCallback done)
    : index_(index),
      flow_(flow),
      client_(std::move(client)),
      server_(std::move(server)),
      pump_(
          loop,
          client_.get(),
          server_.get(),
          [this, done = std::move(done)](const SplicePump::Completion& completion) {
            done(*this, completion);
          },
          std::move(pipes)) {}

bool StreamRelay::start() {
  return pump_.start();
}

}  // namespace iperf3proxy::proxy
