#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "proxy/test_report.h"

namespace iperf3proxy::proxy {
namespace {

TestSummary bidirSummary() {
  TestSummary s;
  s.id = "kpdjmnui";
  s.client = "192.0.2.7:33238";
  proto::TestParams params;
  params.mode = proto::TestMode::Bidirectional;
  params.streams_per_direction = 2;
  params.client_version = "3.12";
  s.params = params;
  s.backend = "127.0.0.1:40211";
  s.bytes_up = 856934396;
  s.bytes_down = 1081177033;
  s.seconds = 2.0249;
  s.roles_repaired = 1;
  s.out_of_order = 2;
  return s;
}

TEST(TestEndedFields, CarryTheWholeRecord) {
  const auto fields = testEndedFields(bidirSummary());
  EXPECT_EQ(fields["event"], "test-ended");
  EXPECT_EQ(fields["client"], "192.0.2.7:33238");
  EXPECT_EQ(fields["client_version"], "3.12");
  EXPECT_EQ(fields["protocol"], "tcp");
  EXPECT_EQ(fields["mode"], "bidir");
  EXPECT_EQ(fields["streams"], 2);
  EXPECT_DOUBLE_EQ(fields["duration_s"].get<double>(), 2.024);
  EXPECT_EQ(fields["bytes_up"], 856934396U);
  EXPECT_EQ(fields["bytes_down"], 1081177033U);
  EXPECT_EQ(fields["roles_repaired"], 1);
  EXPECT_EQ(fields["out_of_order"], 2);
  EXPECT_EQ(fields["backend"], "127.0.0.1:40211");
  EXPECT_EQ(fields["reason"], "completed");
  EXPECT_EQ(fields["detail"], "");
}

TEST(TestEndedFields, UnknownBeforeTheParametersAreNullNotMissing) {
  // One schema for log pipelines: every field is always there.
  TestSummary s = bidirSummary();
  s.params.reset();
  s.backend.clear();
  s.reason = CloseReason::NoBackendFree;
  const auto fields = testEndedFields(s);
  const auto complete = testEndedFields(bidirSummary());
  ASSERT_EQ(fields.size(), complete.size());
  for (const char* key : {"client_version", "protocol", "mode", "streams", "backend"}) {
    EXPECT_TRUE(fields[key].is_null()) << key;
  }
  EXPECT_EQ(fields["reason"], "no-backend-free");
}

TEST(TestEndedFields, TheTextLineStaysAsItWas) {
  // Tests and scripts parse it (integration/harness.py): the JSON format must not change it.
  EXPECT_EQ(formatTestEnded(bidirSummary()),
            "[s:kpdjmnui] test ended: client=192.0.2.7:33238 mode=tcp bidir streams=2 "
            "up_bytes=856934396 down_bytes=1081177033 duration=2.02s reason=completed "
            "roles_repaired=1 out_of_order=2 backend=127.0.0.1:40211");
}

}  // namespace
}  // namespace iperf3proxy::proxy
