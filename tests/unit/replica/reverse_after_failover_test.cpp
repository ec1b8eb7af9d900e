// SPDX-License-Identifier: MIT
// Reverse replication after a failover: whether the failover was planned is kept in the
// replica host's failover record, and the new primary's link starts as a resync after an
// unplanned failover (the old primary's disks hold writes the replica never received) and
// with only changes after a planned one.
#include <gtest/gtest.h>

#include <fstream>

#include "replica/replica_host.h"
#include "replica/replica_host_impl.h"
#include "replica/replica_link.h"
#include "unit/common/temp_dir.h"

namespace vmshadow::replica {
namespace {

ReverseSource source(bool planned) {
    ReverseSource s;
    s.vm = "web1";
    s.uuid = "6f1c2a4e-0b7d-4c1e-9a53-1f2e3d4c5b6a";
    s.peer_endpoint = "127.0.0.1:8471";
    s.chain_id = "0123456789abcdef";
    s.checkpoint_xml = "<domaincheckpoint/>";
    s.token = "vmshadow-01234567-20261207T083000.000Z";
    s.time = "2026-12-07T08:30:00Z";
    s.history = 6;
    s.planned = planned;
    return s;
}

TEST(ReverseAfterFailover, UnplannedFailoverReverseStartsAsResyncRequired) {
    LinkRecord link = reverse_link(source(false), std::nullopt);
    EXPECT_EQ(link.state, "resync-required");
    // The reverse checkpoint stays the chain's base; the resync compares against point 0.
    EXPECT_EQ(link.checkpoint, source(false).token);
    EXPECT_EQ(link.chain_id, "0123456789abcdef");
}

TEST(ReverseAfterFailover, PlannedFailoverReverseStartsNormalFromTheReverseCheckpoint) {
    LinkSpec earlier;
    earlier.interval = std::chrono::seconds(30);
    earlier.bandwidth_mib = 50;
    earlier.to = "somewhere:1";
    LinkRecord link = reverse_link(source(true), earlier);
    EXPECT_EQ(link.state, "normal");
    EXPECT_EQ(link.checkpoint, source(true).token);
    EXPECT_EQ(link.checkpoint_xml, "<domaincheckpoint/>");
    EXPECT_EQ(link.spec.to, "127.0.0.1:8471");
    EXPECT_EQ(link.spec.interval, std::chrono::seconds(30));  // the administrator's, kept
    EXPECT_EQ(link.spec.bandwidth_mib, 50u);
    EXPECT_EQ(link.spec.history, 6u);
}

TEST(ReverseAfterFailover, FailoverRecordKeepsWhetherItWasPlanned) {
    test::TempDir dir;
    for (bool planned : {true, false}) {
        FailoverRecord record{
            3, "0123456789abcdef", "cp", "<domaincheckpoint/>", "2026-12-07T08:30:00Z", planned};
        ASSERT_TRUE(write_failover_record(dir.path, record));
        auto back = read_failover_record(dir.path);
        ASSERT_TRUE(back) << back.error().message();
        EXPECT_EQ(back->planned, planned);
        EXPECT_EQ(back->seq, 3u);
    }
}

TEST(ReverseAfterFailover, RecordWithoutThePlannedFlagReadsAsUnplanned) {
    test::TempDir dir;
    std::ofstream(dir.path / "failover.json")
        << R"({"seq": 1, "chain_id": "0123456789abcdef", "checkpoint": "cp",
               "checkpoint_xml": "<x/>", "time": "2026-12-07T08:30:00Z"})";
    auto back = read_failover_record(dir.path);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_FALSE(back->planned);  // the safe side: a resync
}

}  // namespace
}  // namespace vmshadow::replica
