// SPDX-License-Identifier: MIT
#pragma once
// ExecWriter: a Writer that calls a host application's command at each event.
//
// This module is: the exec-writer contract (also in docs/VSS.md; scripts depend on it,
// change both together):
//   Invocation   COMMAND [ARGS...] EVENT, for each event listed in the config's "events"
//                (others succeed without running anything). EVENT is one of identify,
//                prepare-backup, prepare-snapshot, freeze, thaw, post-snapshot,
//                backup-complete, abort, pre-restore, post-restore. stdin is /dev/null.
//   Environment  the caller's environment, then the config's "environment", then:
//                VMSHADOW_EVENT       the event (same as the last argument)
//                VMSHADOW_OPERATION   backup | restore
//                VMSHADOW_BACKUP_ID   the backup (snapshot set) id
//                VMSHADOW_BACKUP_TYPE full | incremental
//                VMSHADOW_VMS         the VMs in this backup, space-separated
//                VMSHADOW_WRITER      the writer's name
//                VMSHADOW_TIMEOUT     whole seconds the command has for this event
//                VMSHADOW_COMPONENTS  its selected components ("logical/name", space-sep.)
//                VMSHADOW_FILE_RESTORE_STATUS  post-restore: all | none | failed | undefined
//   Exit status  0 = success; 75 (EX_TEMPFAIL) = veto, retryable (the whole backup may be
//                retried); any other = veto, not retryable. Killed by a signal = not
//                retryable. The last non-empty line of stderr becomes the error message.
//   Timeout      per event from the config (default 60 s), and never past the
//                coordinator's deadline for the event. At the timeout the command's whole
//                process group gets SIGTERM, then SIGKILL 2 s later; the writer fails at
//                that event with FailureCode::timeout (retryable). Anything the command
//                leaves running in its process group after exiting is killed.
//   identify     optional. If the command handles it, it may print its components as JSON
//                on stdout: {"components": [{"name": "main", "logical_path": "pgsql",
//                "files": [{"path": "/var/lib/postgresql"}]}]}. Otherwise the writer has
//                one component: logical path "exec", named after the writer.
//   abort        may come more than once and in any state: the command must be idempotent.
// Writer id: "exec:<name>".
// This module is not: the config loader (exec_writer_config.h).
//
// Thread-safety: events of different ExecWriters may run concurrently; one ExecWriter
// keeps no mutable state, so even a late call next to Abort is safe.

#include <memory>
#include <string>
#include <vector>

#include "vss/exec_writer_config.h"
#include "vss/writer.h"

namespace vmshadow::vss {

inline constexpr int kExecExitRetryable = 75;  // EX_TEMPFAIL: veto, retryable

class ExecWriter final : public Writer {
  public:
    explicit ExecWriter(ExecWriterConfig config) : config_(std::move(config)) {}

    std::string id() const override { return "exec:" + config_.name; }
    std::string name() const override { return config_.name; }
    const ExecWriterConfig& config() const { return config_; }

    std::expected<WriterMetadata, Veto> identify(EventContext& context) override;
    WriterResult prepare_backup(EventContext& c) override { return run(c); }
    WriterResult prepare_snapshot(EventContext& c) override { return run(c); }
    WriterResult freeze(EventContext& c) override { return run(c); }
    WriterResult thaw(EventContext& c) override { return run(c); }
    WriterResult post_snapshot(EventContext& c) override { return run(c); }
    WriterResult backup_complete(EventContext& c) override { return run(c); }
    WriterResult abort(EventContext& c) override { return run(c); }
    WriterResult pre_restore(EventContext& c) override { return run(c); }
    WriterResult post_restore(EventContext& c) override { return run(c); }

  private:
    // Runs the command for context.event; on success returns its stdout.
    std::expected<std::string, Veto> call(const EventContext& context) const;
    WriterResult run(EventContext& context) const;
    WriterMetadata default_metadata() const;

    ExecWriterConfig config_;
};

// One ExecWriter per config in `dir` (kDefaultExecWritersDir by default).
Result<std::vector<std::shared_ptr<Writer>>> load_exec_writers(const std::filesystem::path& dir);

}  // namespace vmshadow::vss
