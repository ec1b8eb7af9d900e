// SPDX-License-Identifier: MIT
#include "vss/coordinator.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "unit/vss/fake_writer.h"

namespace vmshadow::vss {
namespace {

using namespace std::chrono_literals;
using testing::EventLog;
using testing::FakeProvider;
using testing::FakeWriter;

struct Bench {
    std::shared_ptr<EventLog> log = std::make_shared<EventLog>();
    std::vector<std::shared_ptr<FakeWriter>> writers;
    std::shared_ptr<FakeProvider> provider = std::make_shared<FakeProvider>(log);

    explicit Bench(int count = 1) {
        for (int i = 0; i < count; ++i) {
            writers.push_back(std::make_shared<FakeWriter>("w" + std::to_string(i), log));
        }
    }
    std::unique_ptr<Coordinator> coordinator(CoordinatorOptions options = {}) {
        if (options.backup_id.empty()) options.backup_id = "b1";
        std::vector<std::shared_ptr<Writer>> all(writers.begin(), writers.end());
        return std::make_unique<Coordinator>(all, provider, std::move(options));
    }
};

CoordinatorOptions fast_timeouts() {
    CoordinatorOptions options;
    options.timeouts = EventTimeouts::uniform(300ms);
    return options;
}

const WriterStatus& status_of(Coordinator& c, const std::string& id) {
    for (const WriterStatus& s : c.document().results) {
        if (s.writer_id == id) return s;
    }
    throw std::runtime_error("no writer " + id);
}

TEST(Coordinator, SingleWriterReceivesEventsInVssOrder) {
    Bench s;
    auto c = s.coordinator();
    auto document = run_backup(*c, {});
    ASSERT_TRUE(document) << document.error().message();
    EXPECT_EQ(s.log->entries(), (std::vector<std::string>{
                                    "w0:identify", "w0:prepare-backup", "w0:prepare-snapshot",
                                    "provider:prepare", "w0:freeze", "provider:create", "w0:thaw",
                                    "w0:post-snapshot", "w0:backup-complete", "provider:finish"}));
    EXPECT_EQ(status_of(*c, "w0").state, WriterState::stable);
    EXPECT_FALSE(status_of(*c, "w0").last_error);
    EXPECT_EQ(s.writers[0]->calls(Event::abort), 0);
    EXPECT_TRUE(c->finished());
}

TEST(Coordinator, EveryWriterFreezesBeforeTheSnapshotAndThawsAfter) {
    Bench s(4);
    auto c = s.coordinator();
    ASSERT_TRUE(run_backup(*c, {}));
    int create = s.log->index_of("provider:create");
    for (int i = 0; i < 4; ++i) {
        std::string id = "w" + std::to_string(i);
        EXPECT_LT(s.log->index_of(id + ":freeze"), create);
        EXPECT_GT(s.log->index_of(id + ":thaw"), create);
        EXPECT_LT(s.log->index_of(id + ":prepare-snapshot"), s.log->index_of("provider:prepare"));
        EXPECT_EQ(s.writers[i]->calls(Event::freeze), 1);
    }
}

TEST(Coordinator, WriterStatesFollowTheSequence) {
    Bench s;

    auto c = s.coordinator();
    ASSERT_TRUE(c->gather_writer_metadata());
    ASSERT_TRUE(c->select_all_components());
    ASSERT_TRUE(c->prepare_for_backup());
    EXPECT_EQ(status_of(*c, "w0").state, WriterState::stable);
    ASSERT_TRUE(c->do_snapshot_set());
    EXPECT_EQ(status_of(*c, "w0").state, WriterState::waiting_for_backup_complete);
    ASSERT_TRUE(c->backup_complete());
    EXPECT_EQ(status_of(*c, "w0").state, WriterState::stable);
}

// Every event after Identify: a veto fails the backup and Abort goes to every writer that
// got PrepareForBackup, the vetoing one included. See coordinator.h for why this includes
// PrepareForSnapshot, PostSnapshot and BackupComplete (a deliberate deviation from VSS).
class VetoAt : public ::testing::TestWithParam<Event> {};

TEST_P(VetoAt, AbortsEveryWriterAndFailsTheBackupAsCancelled) {
    const Event event = GetParam();
    Bench s(3);
    s.writers[1]->veto_at(event, FailureCode::nonretryable, "disk is read-only");
    auto c = s.coordinator();
    auto document = run_backup(*c, {});
    ASSERT_FALSE(document);
    EXPECT_EQ(document.error().kind(), ErrorKind::cancelled);
    EXPECT_NE(document.error().message().find("w1"), std::string::npos);
    EXPECT_NE(document.error().message().find("disk is read-only"), std::string::npos);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(s.writers[i]->calls(Event::abort), 1) << i;
    const WriterStatus& failed = status_of(*c, "w1");
    EXPECT_EQ(failed.state, failed_state_for(event));
    ASSERT_TRUE(failed.last_error);
    EXPECT_EQ(failed.last_error->event, event);
    EXPECT_FALSE(failed.last_error->retryable());
    EXPECT_EQ(status_of(*c, "w0").state, WriterState::stable);
    EXPECT_EQ(status_of(*c, "w2").state, WriterState::stable);
    EXPECT_EQ(s.log->count("provider:finish"), 0);
    // The provider discards the set whenever it was asked to prepare one.
    EXPECT_EQ(s.log->count("provider:abort"), s.log->count("provider:prepare"));
    EXPECT_TRUE(c->finished());
}

INSTANTIATE_TEST_SUITE_P(Coordinator, VetoAt,
                         ::testing::Values(Event::prepare_backup, Event::prepare_snapshot,
                                           Event::freeze, Event::thaw, Event::post_snapshot,
                                           Event::backup_complete),
                         [](const auto& info) {
                             std::string name(event_name(info.param));
                             std::erase(name, '-');
                             return name;
                         });

TEST(Coordinator, VetoAtIdentifyFailsWithoutAnyAbort) {
    Bench s(2);
    s.writers[0]->veto_at(Event::identify, FailureCode::retryable);
    auto c = s.coordinator();
    auto document = run_backup(*c, {});
    ASSERT_FALSE(document);
    EXPECT_EQ(document.error().kind(), ErrorKind::cancelled);
    EXPECT_EQ(s.writers[0]->calls(Event::abort) + s.writers[1]->calls(Event::abort), 0);
    EXPECT_EQ(s.writers[1]->calls(Event::prepare_backup), 0);
    EXPECT_EQ(status_of(*c, "w0").state, WriterState::failed_at_identify);
    EXPECT_TRUE(status_of(*c, "w0").last_error->retryable());
}

class TimeoutAt : public ::testing::TestWithParam<Event> {};

TEST_P(TimeoutAt, FailsThatWriterWithTimeoutAndAbortsEveryone) {
    const Event event = GetParam();
    Bench s(2);
    s.writers[0]->hang_at(event);
    auto c = s.coordinator(fast_timeouts());
    auto started = std::chrono::steady_clock::now();
    auto document = run_backup(*c, {});
    ASSERT_FALSE(document);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
    EXPECT_EQ(document.error().kind(), ErrorKind::timeout);
    const WriterStatus& failed = status_of(*c, "w0");
    EXPECT_EQ(failed.state, failed_state_for(event));
    ASSERT_TRUE(failed.last_error);
    EXPECT_EQ(failed.last_error->code, FailureCode::timeout);
    EXPECT_TRUE(failed.last_error->retryable());
    if (event != Event::identify) {
        EXPECT_EQ(s.writers[1]->calls(Event::abort), 1);
        EXPECT_EQ(status_of(*c, "w1").state, WriterState::stable);
    }
}

INSTANTIATE_TEST_SUITE_P(Coordinator, TimeoutAt,
                         ::testing::Values(Event::identify, Event::prepare_backup,
                                           Event::prepare_snapshot, Event::freeze, Event::thaw,
                                           Event::post_snapshot, Event::backup_complete),
                         [](const auto& info) {
                             std::string name(event_name(info.param));
                             std::erase(name, '-');
                             return name;
                         });

TEST(Coordinator, RetryableVetoIsRecordedAsRetryable) {
    Bench s;
    s.writers[0]->veto_at(Event::freeze, FailureCode::retryable, "agent busy");
    auto c = s.coordinator();
    auto document = run_backup(*c, {});
    ASSERT_FALSE(document);
    EXPECT_NE(document.error().message().find("(retryable)"), std::string::npos);
    EXPECT_TRUE(status_of(*c, "w0").last_error->retryable());
}

TEST(Coordinator, WriterThatThrowsIsANonRetryableVeto) {
    Bench s;
    s.writers[0]->throw_at(Event::prepare_snapshot);
    auto c = s.coordinator();
    auto document = run_backup(*c, {});
    ASSERT_FALSE(document);
    const WriterStatus& failed = status_of(*c, "w0");
    EXPECT_EQ(failed.state, WriterState::failed_at_prepare_snapshot);
    EXPECT_NE(failed.last_error->message.find("boom"), std::string::npos);
    EXPECT_FALSE(failed.last_error->retryable());
}

TEST(Coordinator, FreezeWindowIsMeasuredPerWriter) {
    Bench s(2);
    s.provider->create_sleep = 60ms;
    auto c = s.coordinator();
    ASSERT_TRUE(run_backup(*c, {}));
    for (const char* id : {"w0", "w1"}) {
        ASSERT_TRUE(status_of(*c, id).freeze_window) << id;
        EXPECT_GE(*status_of(*c, id).freeze_window, 60ms);
        EXPECT_LT(*status_of(*c, id).freeze_window, 2s);
    }
    ASSERT_TRUE(c->longest_freeze_window());
    EXPECT_GE(*c->longest_freeze_window(), 60ms);
}

TEST(Coordinator, FrozenLongerThanTheWindowLimitFailsAtThawWithTimeout) {
    Bench s;
    s.provider->create_sleep = 100ms;
    CoordinatorOptions options;
    options.timeouts.freeze_window = 20ms;
    auto c = s.coordinator(options);
    auto document = run_backup(*c, {});
    ASSERT_FALSE(document);
    EXPECT_EQ(document.error().kind(), ErrorKind::timeout);
    EXPECT_EQ(status_of(*c, "w0").state, WriterState::failed_at_thaw);
    EXPECT_EQ(status_of(*c, "w0").last_error->code, FailureCode::timeout);
    EXPECT_EQ(s.log->count("provider:abort"), 1);
}

TEST(Coordinator, ManyWritersFreezeInParallel) {
    Bench s(16);
    for (auto& w : s.writers) {
        w->sleep_at(Event::freeze, 100ms);
        w->sleep_at(Event::thaw, 100ms);
    }
    auto c = s.coordinator();
    ASSERT_TRUE(c->gather_writer_metadata());
    ASSERT_TRUE(c->select_all_components());
    ASSERT_TRUE(c->prepare_for_backup());
    auto started = std::chrono::steady_clock::now();
    ASSERT_TRUE(c->do_snapshot_set());
    // Serially this would take 16 × 200 ms.
    EXPECT_LT(std::chrono::steady_clock::now() - started, 1500ms);
    ASSERT_TRUE(c->backup_complete());
    // Each writer's window is about one thaw long, not sixteen.
    EXPECT_LT(*c->longest_freeze_window(), 1000ms);
}

TEST(Coordinator, ProviderFailureThawsAndAbortsEveryWriter) {
    Bench s(2);
    s.provider->fail_create = Error(ErrorKind::unavailable, "backup job refused");
    auto c = s.coordinator();
    auto document = run_backup(*c, {});
    ASSERT_FALSE(document);
    EXPECT_EQ(document.error().kind(), ErrorKind::unavailable);
    EXPECT_NE(document.error().message().find("backup job refused"), std::string::npos);
    for (auto& w : s.writers) {
        EXPECT_EQ(w->calls(Event::thaw), 1);
        EXPECT_EQ(w->calls(Event::abort), 1);
        EXPECT_EQ(w->calls(Event::post_snapshot), 0);
    }
    EXPECT_EQ(s.log->count("provider:abort"), 1);
}

TEST(Coordinator, ProviderThatDoesNotAnswerInTimeFailsWithTimeout) {
    Bench s;
    s.provider->hang_create = true;
    CoordinatorOptions options;
    options.timeouts.snapshot = 100ms;
    auto c = s.coordinator(options);
    auto document = run_backup(*c, {});
    ASSERT_FALSE(document);
    EXPECT_EQ(document.error().kind(), ErrorKind::timeout);
    EXPECT_EQ(s.writers[0]->calls(Event::thaw), 1);
    EXPECT_EQ(s.writers[0]->calls(Event::abort), 1);
}

TEST(Coordinator, AbortIsIdempotent) {
    Bench s(2);
    auto c = s.coordinator();
    ASSERT_TRUE(c->gather_writer_metadata());
    ASSERT_TRUE(c->select_all_components());
    ASSERT_TRUE(c->prepare_for_backup());
    EXPECT_TRUE(c->abort("user interrupt"));
    EXPECT_TRUE(c->abort("again"));
    for (auto& w : s.writers) EXPECT_EQ(w->calls(Event::abort), 1);
    EXPECT_FALSE(c->do_snapshot_set());
    EXPECT_EQ(c->report().error->kind(), ErrorKind::cancelled);
}

TEST(Coordinator, AbandonedPreparedBackupIsAbortedOnDestruction) {
    Bench s;
    {
        auto c = s.coordinator();
        ASSERT_TRUE(c->gather_writer_metadata());
        ASSERT_TRUE(c->select_all_components());
        ASSERT_TRUE(c->prepare_for_backup());
        ASSERT_TRUE(c->do_snapshot_set());
    }
    EXPECT_EQ(s.writers[0]->calls(Event::abort), 1);
    EXPECT_EQ(s.log->count("provider:abort"), 1);
}

TEST(Coordinator, CopyFailureAbortsTheBackup) {
    Bench s;
    auto c = s.coordinator();
    auto document = run_backup(*c, [](const SnapshotSet&, Coordinator&) -> Status {
        return fail(ErrorKind::io, "repository full");
    });
    ASSERT_FALSE(document);
    EXPECT_EQ(document.error().kind(), ErrorKind::io);
    EXPECT_EQ(s.writers[0]->calls(Event::abort), 1);
    EXPECT_EQ(s.writers[0]->calls(Event::backup_complete), 0);
}

TEST(Coordinator, ComponentMarkedNotBackedUpAbortsTheWholeBackup) {
    Bench s(2);
    auto c = s.coordinator();
    auto document = run_backup(*c, [](const SnapshotSet& set, Coordinator& co) -> Status {
        return co.set_backup_succeeded(set.snapshots.at(0).component, false);
    });
    ASSERT_FALSE(document);
    EXPECT_EQ(document.error().kind(), ErrorKind::cancelled);
    for (auto& w : s.writers) EXPECT_EQ(w->calls(Event::abort), 1);
}

TEST(Coordinator, WriterWithoutSelectedComponentsGetsNoEventsAfterPrepareBackup) {
    Bench s(2);
    auto c = s.coordinator();
    auto document = run_backup(*c, {}, [](const ComponentKey& k) { return k.writer_id == "w0"; });
    ASSERT_TRUE(document) << document.error().message();
    EXPECT_EQ(s.writers[1]->calls(Event::prepare_backup), 1);
    EXPECT_EQ(s.writers[1]->calls(Event::freeze), 0);
    EXPECT_EQ(s.writers[1]->calls(Event::backup_complete), 0);
    EXPECT_EQ(s.writers[0]->calls(Event::freeze), 1);
    EXPECT_EQ(document->components.size(), 1u);
}

TEST(Coordinator, AbortGoesOnlyToWritersThatGotPrepareForBackup) {
    Bench s(2);
    s.writers[0]->veto_at(Event::prepare_snapshot);
    auto c = s.coordinator();
    ASSERT_FALSE(run_backup(*c, {}, [](const ComponentKey& k) { return k.writer_id == "w0"; }));
    // w1 had no component but got PrepareForBackup, so it gets Abort too.
    EXPECT_EQ(s.writers[1]->calls(Event::abort), 1);
}

TEST(Coordinator, BackupStampsReachTheDocumentTheProviderAndTheNextIncremental) {
    Bench s;
    s.writers[0]->on_event = [](EventContext& context) {
        if (context.event != Event::prepare_snapshot) return;
        for (auto& component : context.components) {
            component.backup_stamp = "ckpt-" + context.backup_id;
        }
    };
    auto first = s.coordinator();
    auto full = run_backup(*first, {});
    ASSERT_TRUE(full);
    ASSERT_EQ(full->components.size(), 1u);
    EXPECT_EQ(full->components[0].backup_stamp, "ckpt-b1");
    EXPECT_EQ(s.provider->request().components.at(0).backup_stamp, "ckpt-b1");

    CoordinatorOptions options;
    options.backup_id = "b2";
    options.backup_type = BackupType::incremental;
    auto second = s.coordinator(options);
    ASSERT_TRUE(second->gather_writer_metadata());
    ASSERT_TRUE(second->select_all_components());
    second->inherit_backup_stamps(*full);
    ASSERT_TRUE(second->prepare_for_backup());
    EventContext seen = s.writers[0]->last_context(Event::prepare_backup);
    ASSERT_EQ(seen.components.size(), 1u);
    EXPECT_EQ(seen.components[0].previous_backup_stamp, "ckpt-b1");
    EXPECT_EQ(seen.backup_type, BackupType::incremental);
    ASSERT_TRUE(second->do_snapshot_set());
    ASSERT_TRUE(second->backup_complete());
    EXPECT_EQ(second->document().components[0].backup_stamp, "ckpt-b2");
}

TEST(Coordinator, FailingAbortLeavesTheWriterInUnknownState) {
    Bench s(2);
    s.writers[0]->veto_at(Event::freeze);
    s.writers[1]->veto_at(Event::abort, FailureCode::nonretryable, "thaw failed");
    auto c = s.coordinator();
    ASSERT_FALSE(run_backup(*c, {}));
    EXPECT_EQ(status_of(*c, "w0").state, WriterState::failed_at_freeze);
    EXPECT_EQ(status_of(*c, "w1").state, WriterState::unknown);
    EXPECT_EQ(status_of(*c, "w1").last_error->event, Event::abort);
}

TEST(Coordinator, ExplicitAbortReportsACleanupFailure) {
    Bench s;
    s.writers[0]->veto_at(Event::abort);
    auto c = s.coordinator();
    ASSERT_TRUE(c->gather_writer_metadata());
    ASSERT_TRUE(c->prepare_for_backup());
    EXPECT_FALSE(c->abort("test"));
}

TEST(Coordinator, MetadataWithAnotherWriterIdFailsIdentify) {
    Bench s;
    s.writers[0]->metadata = WriterMetadata{"someone-else", "x", RestoreMethod::custom, {}};
    auto c = s.coordinator();
    auto metadata = c->gather_writer_metadata();
    ASSERT_FALSE(metadata);
    EXPECT_EQ(status_of(*c, "w0").state, WriterState::failed_at_identify);
}

TEST(Coordinator, TwoWritersWithOneIdFailIdentify) {
    auto log = std::make_shared<EventLog>();
    std::vector<std::shared_ptr<Writer>> writers{std::make_shared<FakeWriter>("same", log),
                                                 std::make_shared<FakeWriter>("same", log)};
    Coordinator c(writers, std::make_shared<FakeProvider>(log), {});
    EXPECT_FALSE(c.gather_writer_metadata());
}

TEST(Coordinator, StepsOutOfOrderAreRefused) {
    Bench s;
    auto c = s.coordinator();
    EXPECT_EQ(c->prepare_for_backup().error().kind(), ErrorKind::internal);
    EXPECT_FALSE(c->do_snapshot_set());
    EXPECT_EQ(c->select_component({"w0", "vm", "w0-0"}).error().kind(), ErrorKind::internal);
}

TEST(Coordinator, UnknownComponentCannotBeSelected) {
    Bench s;
    auto c = s.coordinator();
    ASSERT_TRUE(c->gather_writer_metadata());
    EXPECT_EQ(c->select_component({"w0", "vm", "nope"}).error().kind(), ErrorKind::not_found);
}

TEST(Coordinator, StateFileRecordsTheLastBackup) {
    auto dir = std::filesystem::temp_directory_path() / ("vss-state-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    Bench s(2);
    s.writers[1]->veto_at(Event::freeze, FailureCode::retryable, "database busy");
    CoordinatorOptions options;
    options.state_file = dir / "writers.json";
    auto c = s.coordinator(options);
    ASSERT_FALSE(run_backup(*c, {}));
    ASSERT_FALSE(c->state_file_error());
    auto report = load_writer_report(dir / "writers.json");
    ASSERT_TRUE(report && *report);
    const WriterReport& r = **report;
    EXPECT_EQ(r.backup_id, "b1");
    EXPECT_FALSE(r.succeeded);
    ASSERT_TRUE(r.error);
    EXPECT_EQ(r.error->kind(), ErrorKind::cancelled);
    ASSERT_EQ(r.writers.size(), 2u);
    EXPECT_EQ(r.writers[1].state, WriterState::failed_at_freeze);
    EXPECT_EQ(r.writers[1].last_error->message, "database busy");
    EXPECT_FALSE(r.finished.empty());
    std::filesystem::remove_all(dir);
}

TEST(Coordinator, GeneratedBackupIdStartsWithTheUtcTimeSoIdsSort) {
    std::string id = new_backup_id();
    ASSERT_EQ(id.size(), 21u);  // 20261122T010203Z-1a2b
    EXPECT_EQ(id[8], 'T');
    EXPECT_EQ(id[15], 'Z');
    EXPECT_EQ(id[16], '-');
    EXPECT_EQ(id.substr(0, 4), utc_timestamp_now().substr(0, 4));
}

}  // namespace
}  // namespace vmshadow::vss
