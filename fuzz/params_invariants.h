#pragma once

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
}

}  // namespace iperf3proxy::fuzz
