#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include "net/unique_fd.h"

namespace iperf3proxy::proxy {

// The pipes of one loop's splice pumps, kept for reuse: a data connection takes two when its
// relay starts and gives them back empty when it ends, so a new stream costs no pipe2() and no
// F_SETPIPE_SZ. Used on its loop's thread only. An idle pipe holds no pages, only its ring of
// slots, so keeping a few is cheap.
class PipePool {
 public:
  struct Pipe {
    net::UniqueFd read;
    net::UniqueFd write;
  };

  // `pipe_size`: the capacity asked for (the kernel rounds it up to a power of two pages and may
  // refuse more than fs.pipe-max-size, or anything beyond the default once a non-root user
  // holds more than fs.pipe-user-pages-soft). `max_idle`: pipes kept for reuse at most.
  explicit PipePool(int pipe_size, std::size_t max_idle = 64);
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // An empty non-blocking pipe, from the pool or new. nullopt (errno set) if none can be made.
  std::optional<Pipe> acquire();

  // Takes a pipe back. Only a pipe known to be empty may be reused; any other is closed.
  void release(Pipe pipe, bool empty);

  int requestedSize() const { return pipe_size_; }

  std::size_t idle() const { return idle_.size(); }

 private:
  int pipe_size_;
  std::size_t max_idle_;
  std::vector<Pipe> idle_;
};

// A new non-blocking pipe of (about) `pipe_size` bytes; the first time the kernel gives less than
// asked, one warning says so and why. nullopt (errno set) if no pipe can be made.
std::optional<PipePool::Pipe> makePipe(int pipe_size);

}  // namespace iperf3proxy::proxy
