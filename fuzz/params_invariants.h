#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "fuzz/fuzz_check.h"
#include "proto/test_params.h"
#include "proto/wire.h"

namespace iperf3proxy::fuzz {

// What every accepted TestParams must satisfy, however it was obtained.
inline void checkTestParams(const proto::TestParams& params) {
  const int streams = params.streams_per_direction;
  FUZZ_CHECK(streams >= 1 && streams <= proto::kMaxStreamsPerDirection,
             "streams_per_direction " + std::to_string(streams));
  FUZZ_CHECK(proto::transportName(params.transport) != "unknown", "transport out of range");
  FUZZ_CHECK(proto::testModeName(params.mode) != "unknown", "mode out of range");
  const int upload = params.mode == proto::TestMode::Reverse ? 0 : streams;
  const int download = params.mode == proto::TestMode::Forward ? 0 : streams;
  FUZZ_CHECK(params.uploadStreams() == upload, "upload " + std::to_string(params.uploadStreams()));
  FUZZ_CHECK(params.downloadStreams() == download,
             "download " + std::to_string(params.downloadStreams()));
  FUZZ_CHECK(params.totalStreams() == upload + download,
             "total " + std::to_string(params.totalStreams()));
  FUZZ_CHECK(
      params.totalStreams() >= 1 && params.totalStreams() <= 2 * proto::kMaxStreamsPerDirection,
      "total " + std::to_string(params.totalStreams()));
  // time and omit are what the server's int fields hold, so nothing computed from them by the
  // proxy (time + omit, (cap + omit) * 1000) can overflow.
  for (const std::int64_t seconds : {params.duration_s, params.omit_s}) {
    FUZZ_CHECK(seconds >= std::numeric_limits<std::int32_t>::min() &&
                   seconds <= std::numeric_limits<std::int32_t>::max(),
               "time or omit outside int: " + std::to_string(seconds));
  }
  FUZZ_CHECK(!params.fq_rate || *params.fq_rate != 0, "fqrate 0 applied");
  for (const auto& option : {params.tos, params.window, params.mss}) {
    FUZZ_CHECK(!option || *option > 0, "a socket option that is not positive");
  }
}

}  // namespace iperf3proxy::fuzz
