#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/control_codec.h"

namespace iperf3proxy::proto::testing {

// One read of a recorded control connection: who wrote it and the bytes.
struct CapturedRead {
  Side side;
  std::vector<std::uint8_t> bytes;
};

// Reads tests/proto/testdata/<name>.hex: one `C <hex>` or `S <hex>` line per read, in the order
// the recording relay saw them (testdata/capture_relay.py). nullopt if the file is missing or
// malformed.
std::optional<std::vector<CapturedRead>> readCapture(std::string_view name);

}  // namespace iperf3proxy::proto::testing
