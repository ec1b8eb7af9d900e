// SPDX-License-Identifier: MIT
#pragma once
// RestoreCoordinator: drives one restore through the writers (VSS InitializeForRestore,
// PreRestore, SetFileRestoreStatus, PostRestore).
//
// This module is: the restore sequence, starting from the BackupDocument saved with the
// restore point:
//   RestoreCoordinator r(writers, saved_document, options);
//   r.gather_writer_metadata();          // Identify: every writer in the document must answer
//   r.select_all_for_restore();          // or select_for_restore() each
//   r.pre_restore();                     // PreRestore: the VM writer stops + undefines
//   ... write the files back; r.set_file_restore_status(key, all | none | failed) ...
//   r.post_restore();                    // PostRestore: the VM writer checks the status,
//                                        // defines the VM, fixes paths, re-attaches NICs
// Writers see each selected component's entry from the backup (backup stamp, backup
// metadata) and, at PostRestore, its file_restore_status (VSS_RS_*): anything but `all`
// should make a writer veto.
// Failure: there is no Abort for restores (as in VSS). A veto or timeout at PreRestore
// returns the error; the requester should then write nothing and still call
// post_restore() with status `none`, so writers that did PreRestore can put back what
// they took away. PostRestore goes to every writer that got PreRestore.
// This module is not: writing files back (the engine does).
//
// Thread-safety: not thread-safe: one requester thread drives it.

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "vss/backup_document.h"
#include "vss/writer.h"
#include "vss/writer_report.h"
#include "vss/writer_roster.h"

namespace vmshadow::vss {

struct RestoreOptions {
    std::vector<std::string> vms;  // told to writers
    EventTimeouts timeouts;
    std::optional<std::filesystem::path> state_file;
};

class RestoreCoordinator {
  public:
    RestoreCoordinator(std::vector<std::shared_ptr<Writer>> writers, const BackupDocument& saved,
                       RestoreOptions options);
    RestoreCoordinator(const RestoreCoordinator&) = delete;
    RestoreCoordinator& operator=(const RestoreCoordinator&) = delete;

    Result<std::vector<WriterMetadata>> gather_writer_metadata();
    // A component of the saved backup whose writer answered Identify.
    Status select_for_restore(const ComponentKey& key);
    Status select_all_for_restore();
    Status pre_restore();
    Status set_file_restore_status(const ComponentKey& key, FileRestoreStatus status);
    // Components whose status was never set count as `none` (nothing was written).
    Status post_restore();

    const BackupDocument& document();
    WriterReport report() const;

  private:
    std::optional<Error> send(Event event, const std::vector<std::size_t>& to);
    void finish(std::optional<Error> error);

    WriterRoster roster_;
    BackupDocument saved_;
    BackupDocument document_;
    RestoreOptions options_;
    bool identified_ = false;
    bool pre_restored_ = false;
    bool finished_ = false;
    std::string started_;
    std::string finished_at_;
    std::optional<Error> first_error_;
};

}  // namespace vmshadow::vss
