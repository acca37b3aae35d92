#include "proto/capture_file.h"

#include <fstream>

namespace iperf3proxy::proto::testing {

std::optional<std::vector<CapturedRead>> readCapture(std::string_view name) {
  std::ifstream in(std::string(PROTO_TESTDATA_DIR) + "/" + std::string(name) + ".hex");
  if (!in) {
    return std::nullopt;
  }
  std::vector<CapturedRead> reads;
  std::string tag;
  std::string hex;
  while (in >> tag >> hex) {
    if ((tag != "C" && tag != "S") || hex.size() % 2 != 0) {
      return std::nullopt;
    }
    CapturedRead read{tag == "C" ? Side::Client : Side::Server, {}};
    for (std::size_t i = 0; i < hex.size(); i += 2) {
      read.bytes.push_back(static_cast<std::uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
    }
    reads.push_back(std::move(read));
  }
  return reads;
}

}  // namespace iperf3proxy::proto::testing
