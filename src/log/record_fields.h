#pragma once

#include <nlohmann/json.hpp>

namespace iperf3proxy::log {

// --log-format json: every log line is a JSON object (log/json_formatter.h). Set once at startup,
// before any other thread runs; callers that have structured fields to add build them only then.
void setJsonLines(bool on);
bool jsonLines();

// Fields that the JSON formatter adds to the log lines this thread writes while the object
// lives, e.g. the test-ended record's client, bytes and reason. Loggers here are synchronous: a
// line is formatted on the thread that logs it, inside the logging call. The text format ignores
// them.
class ScopedFields {
 public:
  explicit ScopedFields(nlohmann::ordered_json fields);
  ~ScopedFields();
  ScopedFields(const ScopedFields&) = delete;
  ScopedFields& operator=(const ScopedFields&) = delete;

  // The innermost fields of this thread, or nullptr.
  static const nlohmann::ordered_json* current();

 private:
  nlohmann::ordered_json fields_;
  const nlohmann::ordered_json* outer_;
};

}  // namespace iperf3proxy::log
