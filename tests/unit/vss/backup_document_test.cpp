// SPDX-License-Identifier: MIT
#include "vss/backup_document.h"

#include <gtest/gtest.h>

namespace vmshadow::vss {
namespace {

BackupDocument sample() {
    BackupDocument doc;
    doc.backup_id = "20261122T010203Z-1a2b";
    doc.backup_type = BackupType::incremental;
    doc.vms = {"web1", "db1"};
    WriterMetadata vm{
        "vmshadow-libvirt-vm", "libvirt VM writer", RestoreMethod::stop_restore_start, {}};
    Component c;
    c.logical_path = "vm";
    c.name = "web1";
    c.caption = "VM web1";
    c.files = {{FileKind::disk, "/var/lib/libvirt/images/web1.qcow2", "vda", "qcow2", 10737418240},
               {FileKind::nvram, "/var/lib/libvirt/qemu/nvram/web1_VARS.fd", "", "", 131072},
               {FileKind::config, "web1.xml", "", "", 0}};
    vm.components.push_back(c);
    doc.writers.push_back(vm);
    ComponentEntry entry;
    entry.key = {"vmshadow-libvirt-vm", "vm", "web1"};
    entry.backup_stamp = "vmshadow-20261122T010203Z-1a2b";
    entry.previous_backup_stamp = "vmshadow-20261121T010203Z-0000";
    entry.backup_metadata = R"({"method":"application"})";
    entry.backup_succeeded = true;
    entry.file_restore_status = FileRestoreStatus::all;
    doc.components.push_back(entry);
    WriterStatus status;
    status.writer_id = "vmshadow-libvirt-vm";
    status.writer_name = "libvirt VM writer";
    status.state = WriterState::failed_at_thaw;
    status.last_error = WriterFailure{Event::thaw, FailureCode::timeout, "agent did not answer"};
    status.freeze_window = std::chrono::milliseconds(42);
    status.events = {{Event::freeze, std::chrono::milliseconds(12), true},
                     {Event::thaw, std::chrono::milliseconds(30), false}};
    doc.results.push_back(status);
    return doc;
}

void expect_same(const BackupDocument& a, const BackupDocument& b) {
    EXPECT_EQ(a.backup_id, b.backup_id);
    EXPECT_EQ(a.backup_type, b.backup_type);
    EXPECT_EQ(a.vms, b.vms);
    EXPECT_EQ(a.writers, b.writers);
    EXPECT_EQ(a.components, b.components);
    ASSERT_EQ(a.results.size(), b.results.size());
    const WriterStatus& x = a.results[0];
    const WriterStatus& y = b.results[0];
    EXPECT_EQ(x.writer_id, y.writer_id);
    EXPECT_EQ(x.state, y.state);
    EXPECT_EQ(x.freeze_window, y.freeze_window);
    ASSERT_TRUE(y.last_error);
    EXPECT_EQ(x.last_error->event, y.last_error->event);
    EXPECT_EQ(x.last_error->code, y.last_error->code);
    EXPECT_EQ(x.last_error->message, y.last_error->message);
    ASSERT_EQ(y.events.size(), 2u);
    EXPECT_EQ(y.events[1].event, Event::thaw);
    EXPECT_FALSE(y.events[1].ok);
}

TEST(BackupDocument, JsonRoundTripKeepsEverything) {
    BackupDocument doc = sample();
    nlohmann::json json = doc;
    auto back = parse_backup_document(json.dump());
    ASSERT_TRUE(back) << back.error().message();
    expect_same(doc, *back);
    nlohmann::json again = *back;
    EXPECT_EQ(json, again);
}

TEST(BackupDocument, JsonNamesAreTheDocumentedOnes) {
    nlohmann::json json = sample();
    EXPECT_EQ(json["format"], "vmshadow-backup-document");
    EXPECT_EQ(json["version"], 1);
    EXPECT_EQ(json["components"][0]["file_restore_status"], "all");
    EXPECT_EQ(json["results"][0]["state"], "failed-at-thaw");
    EXPECT_EQ(json["results"][0]["last_error"]["code"], "timeout");
    EXPECT_EQ(json["results"][0]["last_error"]["retryable"], true);
    EXPECT_EQ(json["writers"][0]["restore_method"], "stop-restore-start");
    EXPECT_EQ(json["writers"][0]["components"][0]["files"][1]["kind"], "nvram");
}

TEST(BackupDocument, NewerVersionIsRefusedAsUnsupported) {
    nlohmann::json json = sample();
    json["version"] = 2;
    auto back = backup_document_from_json(json);
    ASSERT_FALSE(back);
    EXPECT_EQ(back.error().kind(), ErrorKind::unsupported);
}

TEST(BackupDocument, ForeignJsonIsCorruption) {
    EXPECT_EQ(parse_backup_document("{\"x\":1}").error().kind(), ErrorKind::corruption);
    EXPECT_EQ(parse_backup_document("not json").error().kind(), ErrorKind::corruption);
    nlohmann::json json = sample();
    json["results"][0]["state"] = "dancing";
    EXPECT_EQ(backup_document_from_json(json).error().kind(), ErrorKind::corruption);
}

TEST(BackupDocument, InheritBackupStampsCopiesStampsOfTheSameComponents) {
    BackupDocument previous = sample();
    BackupDocument next;
    ComponentEntry same;
    same.key = {"vmshadow-libvirt-vm", "vm", "web1"};
    ComponentEntry other;
    other.key = {"vmshadow-libvirt-vm", "vm", "db1"};
    next.components = {same, other};
    next.inherit_backup_stamps(previous);
    EXPECT_EQ(next.components[0].previous_backup_stamp, "vmshadow-20261122T010203Z-1a2b");
    EXPECT_EQ(next.components[1].previous_backup_stamp, "");
}

TEST(WriterMetadata, DuplicateComponentIsInvalid) {
    WriterMetadata m{"w", "w", RestoreMethod::custom, {}};
    Component c;
    c.name = "a";
    m.components = {c, c};
    EXPECT_FALSE(validate(m));
    m.components.pop_back();
    EXPECT_TRUE(validate(m));
    m.writer_id.clear();
    EXPECT_FALSE(validate(m));
}

TEST(WriterState, NamesRoundTripAndFailedStatesAreFailed) {
    for (int s = 0; s <= static_cast<int>(WriterState::failed_at_post_restore); ++s) {
        auto state = static_cast<WriterState>(s);
        EXPECT_EQ(parse_writer_state(writer_state_name(state)), state);
    }
    for (Event e : kAllEvents) {
        EXPECT_EQ(parse_event(event_name(e)), e);
        EXPECT_TRUE(is_failed(failed_state_for(e)));
    }
    EXPECT_FALSE(is_failed(WriterState::waiting_for_thaw));
}

TEST(WriterState, VetoFromErrorClassifiesRetryableKinds) {
    EXPECT_EQ(veto_from(Error(ErrorKind::unavailable, "x")).code, FailureCode::retryable);
    EXPECT_EQ(veto_from(Error(ErrorKind::timeout, "x")).code, FailureCode::timeout);
    EXPECT_EQ(veto_from(Error(ErrorKind::corruption, "x")).code, FailureCode::nonretryable);
}

// `backup --disk vdz`: the VM writer's "no such disk" is the user's input, exit 3, not a
// writer veto (cancelled, exit 12); a plain veto stays cancelled.
TEST(WriterState, InputErrorBehindAVetoKeepsItsKind) {
    WriterStatus status;
    status.writer_name = "vm";
    for (ErrorKind kind : {ErrorKind::not_found, ErrorKind::invalid_argument}) {
        Veto veto = veto_from(Error(kind, "vm has no disk 'vdz' (its disks: vda)"));
        WriterFailure failure{Event::prepare_backup, veto.code, veto.message, veto.kind};
        Error error = error_for(status, failure);
        EXPECT_EQ(error.kind(), kind);
        EXPECT_NE(error.message().find("its disks: vda"), std::string::npos);
    }
    Veto plain = veto_nonretryable("disk is read-only");
    EXPECT_EQ(error_for(status, {Event::freeze, plain.code, plain.message, plain.kind}).kind(),
              ErrorKind::cancelled);
}

TEST(WriterState, WriterFailureKeepsTheKindOfTheErrorBehindTheVeto) {
    WriterStatus writer;
    writer.writer_name = "w";
    auto failure_of = [](const Veto& v) {
        return WriterFailure{Event::prepare_backup, v.code, v.message, v.kind};
    };
    // An agent that did not answer is `unavailable` (exit 4), not a plain veto.
    EXPECT_EQ(error_for(writer, failure_of(veto_from(Error(ErrorKind::unavailable, "x")))).kind(),
              ErrorKind::unavailable);
    EXPECT_EQ(error_for(writer, failure_of(veto_from(Error(ErrorKind::io, "x")))).kind(),
              ErrorKind::io);
    EXPECT_EQ(error_for(writer, failure_of(veto_from(Error(ErrorKind::internal, "x")))).kind(),
              ErrorKind::cancelled);
    EXPECT_EQ(error_for(writer, failure_of(veto_nonretryable("no"))).kind(), ErrorKind::cancelled);
    EXPECT_EQ(error_for(writer, failure_of(Veto{FailureCode::timeout, "slow"})).kind(),
              ErrorKind::timeout);
}

}  // namespace
}  // namespace vmshadow::vss
