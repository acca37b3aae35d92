#pragma once

// Owning pointers for libevent objects. Only src/ev/ creates or frees libevent objects.

#include <memory>

#include <event2/event.h>

namespace iperf3proxy::ev {

struct EventBaseDeleter {
  void operator()(event_base* base) const { event_base_free(base); }
};

struct EventDeleter {
  void operator()(event* e) const { event_free(e); }
};

using EventBasePtr = std::unique_ptr<event_base, EventBaseDeleter>;
using EventPtr = std::unique_ptr<event, EventDeleter>;

}  // namespace iperf3proxy::ev
