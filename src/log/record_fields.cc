#include "log/record_fields.h"

#include <atomic>

namespace iperf3proxy::log {
namespace {

std::atomic<bool> json_lines{false};
thread_local const nlohmann::ordered_json* current_fields = nullptr;

}  // namespace

void setJsonLines(bool on) {
  json_lines.store(on, std::memory_order_relaxed);
}

bool jsonLines() {
  return json_lines.load(std::memory_order_relaxed);
}

ScopedFields::ScopedFields(nlohmann::ordered_json fields)
    : fields_(std::move(fields)), outer_(current_fields) {
  current_fields = &fields_;
}

ScopedFields::~ScopedFields() {
  current_fields = outer_;
}

const nlohmann::ordered_json* ScopedFields::current() {
  return current_fields;
}

}  // namespace iperf3proxy::log
