#include "proxy/backend_probe.h"

#include "net/socket_ops.h"

namespace iperf3proxy::proxy {

BackendProbe::BackendProbe(ev::EventLoop& loop,
                           const net::Address& address,
                           long deadline_ms,
                           std::function<void(bool listening)> done)
    : loop_(loop),
      address_(address),
      deadline_ms_(deadline_ms),
      done_(std::move(done)),
      deadline_(loop, [this] { finish(false); }),
      refused_now_(loop, [this] { finish(false); }) {}

BackendProbe::~BackendProbe() {
  if (writable_) {
    writable_->disable();
  }
}

void BackendProbe::start() {
  fd_ = net::startConnect(address_);
  if (!fd_) {
    refused_now_.armMs(0);
    return;
  }
  writable_ = std::make_unique<ev::IoEvent>(loop_, fd_.get(), ev::IoEvent::Kind::Write,
                                            [this] { finish(net::socketError(fd_.get()) == 0); });
  writable_->enable();
  deadline_.armMs(deadline_ms_);
}

void BackendProbe::finish(bool listening) {
  if (finished_) {
    return;
  }
  finished_ = true;
  deadline_.disarm();
  if (writable_) {
    // Called from the event's own callback: stop it now, free it once that has returned.
    writable_->disable();
    loop_.deferredDestroy(std::move(writable_));
  }
  fd_.reset();
  done_(listening);
}

}  // namespace iperf3proxy::proxy
