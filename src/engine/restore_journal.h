// SPDX-License-Identifier: MIT
#pragma once
// RestoreJournal: the write-then-swap of an in-place restore as a journalled transaction, so
// that a VM is never left undefined or with a mix of old and new files, whatever is killed
// when (docs/ARCHITECTURE.md "Data flow of a restore").
//
// The journal (<disks' folder>/.vmshadow-restore-<VM>.journal, written atomically: temp file,
// fsync, rename, fsync of the folder) records, before anything is changed: the old VM's
// inactive definition and whether it ran, the new definition twice (on the staged files and
// on the final names), and every file's three names: the target, the restored file staged
// beside it (<target>.vmshadow-restore) and the old file kept aside (<target>.vmshadow-old, a
// hard link). Its steps, each safe to repeat:
//   prepare   the journal (phase "prepared"), then the aside links;
//   commit    the old VM is stopped, its managed-save, checkpoint and snapshot metadata go,
//             and the new definition ON THE STAGED FILES replaces the old one in one libvirt
//             define (a complete new VM), then the phase becomes "committed";
//   swap      each restored file is hard-linked over its target (link + rename: the target
//             is always a whole file, old or new; the staged name stays valid);
//   finish    the final definition (on the targets) is defined, the VM resumed or started,
//             the staged and aside names and the journal removed.
// Before "committed" the old VM is defined on its untouched files; after it, the new one is
// defined on complete files. recover() — run by the next in-place restore of that VM — rolls
// a "prepared" journal back (old definition defined again, started if it ran) and a
// "committed" one forward. An error (not a kill) after the commit rolls back, as the old files
// are still aside.
// It is not: writing the restored files (vm_restore.cpp) or the VSS events (the VM writer).
//
// Thread-safety: one owner; the caller holds the VM's lock (vm_lock.h).

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "virt/connection.h"

namespace vmshadow::engine {

struct JournalFile {
    std::string target, staged, aside;
    bool had_old = false;  // the target existed: it is kept aside, and put back on roll back
};

struct RestoreJournal {
    std::filesystem::path path;
    std::string vm, point;
    std::optional<std::string> old_xml;  // the old VM's inactive definition; none: no old VM
    std::string old_uuid;
    bool old_was_running = false;
    std::string staged_xml, final_xml;
    std::string new_uuid;
    std::optional<std::string> memory_file;  // resumed when finishing (an `image` point)
    bool start = false;
    std::vector<JournalFile> files;
    std::string phase = "prepared";  // then "committed"

    static std::filesystem::path path_for(const std::filesystem::path& folder,
                                          const std::string& vm);
    // Nothing there: nullopt.
    static Result<std::optional<RestoreJournal>> load(const std::filesystem::path& path);
    Status save() const;

    // The steps; see the header comment.
    Status link_aside() const;
    Status commit(const virt::Connection& connection);
    Status swap() const;
    Status define_final(const virt::Connection& connection) const;
    void remove_leftovers() const;  // staged and aside names, the journal itself

    // After an error: the old VM back on its old files (started if it ran), nothing left.
    // `start_if_ran`: start the old VM again if it was running (the VM writer does it otherwise).
    Status roll_back(const virt::Connection& connection, bool start_if_ran) const;
    // The next run: "prepared" rolls back, "committed" finishes (definition, start/resume).
    // Returns what it did, for a note.
    Result<std::string> recover(const virt::Connection& connection);
};

// Fails (conflict) when an in-place restore of `domain` was killed and its journal waits beside
// one of its disks: a backup then would record the staged names; the restore must finish first.
Status refuse_interrupted_restore(const virt::Domain& domain);

}  // namespace vmshadow::engine
