#pragma once

#include <memory>

#include <spdlog/formatter.h>

namespace iperf3proxy::log {

// --log-format json: each log line becomes one JSON object on one line, e.g.
//   {"time":"2025-03-01T12:00:00.123Z","level":"info","test":"kpdjmnui","message":"..."}
// `time` is UTC with milliseconds; `level` is spdlog's name (trace, debug, info, warning, error,
// critical); `test` is the test's id where the line belongs to one (the "[s:ID] " prefix every
// such line starts with, moved out of the message); then the fields of a ScopedFields on the
// logging thread, if any (record_fields.h). Bytes that are not UTF-8 (a peer's garbage quoted in
// a message) are replaced, never an exception.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
  std::unique_ptr<spdlog::formatter> clone() const override;
};

}  // namespace iperf3proxy::log
