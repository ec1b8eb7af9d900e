// SPDX-License-Identifier: MIT
#include "engine/restore_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/atomic_file.h"
#include "common/os_error.h"
#include "common/test_hook.h"
#include "common/unique_fd.h"
#include "virt/lifecycle.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

constexpr int kJournalVersion = 1;

// Both names are one file (a swap or an aside link already made). A missing name is not.
bool same_file(const std::string& a, const std::string& b) {
    struct stat sa {
    }, sb{};
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

// `target` becomes the file `source` names, in one rename: at every instant it is a whole
// file, the old one or the new one; `source` keeps its name.
Status link_over(const std::string& source, const std::string& target) {
    std::string temp = target + ".vmshadow-swap";
    ::unlink(temp.c_str());
    if (::link(source.c_str(), temp.c_str()) != 0)
        return fail(os_error("link " + source + " to " + temp, errno));
    if (::rename(temp.c_str(), target.c_str()) != 0) {
        int err = errno;
        ::unlink(temp.c_str());
        return fail(os_error("move " + source + " over " + target, err));
    }
    return {};
}

Status sync_dirs(const std::vector<JournalFile>& files) {
    std::set<std::string> dirs;
    for (const auto& f : files) dirs.insert(fs::path(f.target).parent_path().string());
    for (const auto& d : dirs) {
        UniqueFd fd(::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd || ::fsync(fd.get()) != 0) return fail(os_error("fsync " + d, errno));
    }
    return {};
}

bool active(const virt::Domain& domain) {
    auto state = domain.state();
    return state && (*state == virt::DomainState::running || *state == virt::DomainState::paused);
}

}  // namespace

fs::path RestoreJournal::path_for(const fs::path& folder, const std::string& vm) {
    return folder / (".vmshadow-restore-" + vm + ".journal");
}

Status RestoreJournal::save() const {
    nlohmann::json j{{"version", kJournalVersion},
                     {"vm", vm},
                     {"point", point},
                     {"phase", phase},
                     {"old_xml", old_xml ? nlohmann::json(*old_xml) : nlohmann::json()},
                     {"old_uuid", old_uuid},
                     {"old_was_running", old_was_running},
                     {"staged_xml", staged_xml},
                     {"final_xml", final_xml},
                     {"new_uuid", new_uuid},
                     {"memory_file", memory_file ? nlohmann::json(*memory_file) : nlohmann::json()},
                     {"start", start},
                     {"files", nlohmann::json::array()}};
    for (const auto& f : files)
        j["files"].push_back({{"target", f.target},
                              {"staged", f.staged},
                              {"aside", f.aside},
                              {"had_old", f.had_old}});
    if (auto st = write_file_atomically(path, j.dump(2) + "\n"); !st)
        return std::unexpected(st.error().with_context("write the restore journal"));
    return {};
}

// Throws json exceptions on a field of the wrong type; load() catches them.
static RestoreJournal journal_from_json(const fs::path& path, const nlohmann::json& j);

Result<std::optional<RestoreJournal>> RestoreJournal::load(const fs::path& path) {
    std::ifstream in(path);
    if (!in.is_open()) {
        if (!exists(path.string())) return std::optional<RestoreJournal>();
        return fail(ErrorKind::io, "read the restore journal " + path.string());
    }
    std::stringstream text;
    text << in.rdbuf();
    const Error unreadable(ErrorKind::corruption,
                           "the restore journal " + path.string() +
                               " is unreadable: look at it, put the VM's files right by hand, "
                               "then remove it");
    auto j = nlohmann::json::parse(text.str(), nullptr, false);
    // A field of the wrong type makes json's value() throw: damaged like unparsable text.
    try {
        if (j.is_discarded() || !j.is_object() || j.value("version", 0) != kJournalVersion)
            return fail(unreadable);
        return std::optional<RestoreJournal>(journal_from_json(path, j));
    } catch (const nlohmann::json::exception&) {
        return fail(unreadable);
    }
}

static RestoreJournal journal_from_json(const fs::path& path, const nlohmann::json& j) {
    RestoreJournal r;
    r.path = path;
    r.vm = j.value("vm", "");
    r.point = j.value("point", "");
    r.phase = j.value("phase", "prepared");
    if (j["old_xml"].is_string()) r.old_xml = j["old_xml"].get<std::string>();
    r.old_uuid = j.value("old_uuid", "");
    r.old_was_running = j.value("old_was_running", false);
    r.staged_xml = j.value("staged_xml", "");
    r.final_xml = j.value("final_xml", "");
    r.new_uuid = j.value("new_uuid", "");
    if (j["memory_file"].is_string()) r.memory_file = j["memory_file"].get<std::string>();
    r.start = j.value("start", false);
    for (const auto& f : j.value("files", nlohmann::json::array()))
        r.files.push_back({f.value("target", ""), f.value("staged", ""), f.value("aside", ""),
                           f.value("had_old", false)});
    return r;
}

Status RestoreJournal::link_aside() const {
    for (const auto& f : files) {
        if (!f.had_old || same_file(f.target, f.aside)) continue;
        ::unlink(f.aside.c_str());
        if (::link(f.target.c_str(), f.aside.c_str()) != 0)
            return fail(
                os_error("keep the old " + f.target + " aside (as " + f.aside + ")", errno));
    }
    return sync_dirs(files);
}

Status RestoreJournal::commit(const virt::Connection& connection) {
    auto old = connection.lookup(vm);
    if (!old && old.error().kind() != ErrorKind::not_found) return std::unexpected(old.error());
    if (old) {
        if (auto st = virt::destroy_domain(*old); !st) return st;
        if (auto st = virt::drop_saved_metadata(*old); !st) return st;
        // Another UUID under that name cannot be redefined over: it goes first. The journal
        // (still "prepared") puts it back if this process dies in between.
        if (old->uuid() != new_uuid)
            if (auto st = virt::undefine_domain(*old); !st) return st;
    }
    auto defined = connection.define(staged_xml);
    if (!defined) return std::unexpected(defined.error().with_context("define VM '" + vm + "'"));
    phase = "committed";
    return save();
}

Status RestoreJournal::swap() const {
    bool first = true;
    for (const auto& f : files) {
        // Staged gone: cleaned up after its swap. Same file: swapped.
        if (!exists(f.staged) || same_file(f.staged, f.target)) continue;
        if (auto st = link_over(f.staged, f.target); !st) return st;
        if (first) test_kill_point("swap");
        first = false;
    }
    return sync_dirs(files);
}

Status RestoreJournal::define_final(const virt::Connection& connection) const {
    auto defined = connection.define(final_xml);
    if (!defined) return std::unexpected(defined.error().with_context("define VM '" + vm + "'"));
    return {};
}

void RestoreJournal::remove_leftovers() const {
    for (const auto& f : files) {
        for (const auto& p : {f.staged, f.aside, f.target + ".vmshadow-swap"}) ::unlink(p.c_str());
    }
    if (memory_file) ::unlink(memory_file->c_str());
    (void)sync_dirs(files);
    test_kill_point("cleaned");
    std::error_code ec;
    fs::remove(path, ec);
}

Status RestoreJournal::roll_back(const virt::Connection& connection, bool start_if_ran) const {
    for (const auto& f : files) {
        if (f.had_old && exists(f.aside) && !same_file(f.aside, f.target)) {
            if (auto st = link_over(f.aside, f.target); !st) return st;
        } else if (!f.had_old && same_file(f.staged, f.target)) {
            ::unlink(f.target.c_str());
        }
    }
    if (auto st = sync_dirs(files); !st) return st;
    auto current = connection.lookup(vm);
    if (!current && current.error().kind() != ErrorKind::not_found)
        return std::unexpected(current.error());
    // A definition under that name that is not the old VM's is this restore's: it goes.
    if (current && (!old_xml || current->uuid() != old_uuid)) {
        if (auto st = virt::destroy_domain(*current); !st) return st;
        if (auto st = virt::undefine_domain(*current); !st) return st;
    }
    if (old_xml) {
        auto back = connection.define(*old_xml);
        if (!back) return std::unexpected(back.error().with_context("define the old VM again"));
        if (start_if_ran && old_was_running && !active(*back)) {
            if (auto st = virt::start_domain(*back); !st) {
                remove_leftovers();
                return fail(st.error().kind(), "VM '" + vm +
                                                   "' was put back as it was but did not start (" +
                                                   st.error().message() + ")");
            }
        }
    }
    remove_leftovers();
    return {};
}

Status refuse_interrupted_restore(const virt::Domain& domain) {
    auto desc = domain.describe();
    if (!desc) return std::unexpected(desc.error());
    std::set<fs::path> folders;
    for (const auto& d : desc->disks)
        if (!d.path.empty()) folders.insert(fs::path(d.path).parent_path());
    for (const auto& folder : folders) {
        fs::path journal = RestoreJournal::path_for(folder, domain.name());
        if (!exists(journal.string())) continue;
        return fail(ErrorKind::conflict,
                    "vm '" + domain.name() + "': an interrupted restore left " + journal.string() +
                        ": run that restore (`vmshadow restore POINT --replace`) again to finish "
                        "or roll it back, then back it up");
    }
    return {};
}

Result<std::string> RestoreJournal::recover(const virt::Connection& connection) {
    const std::string what = "an interrupted restore of '" + vm + "' (point " +
                             point.substr(0, 12) + ", journal " + path.string() + ")";
    if (phase != "committed") {
        if (auto st = roll_back(connection, true); !st)
            return std::unexpected(st.error().with_context("roll back " + what));
        return "rolled back " + what + ": the old VM is defined as it was";
    }
    if (auto st = swap(); !st) return std::unexpected(st.error().with_context("finish " + what));
    if (auto st = define_final(connection); !st)
        return std::unexpected(st.error().with_context("finish " + what));
    auto domain = connection.lookup(vm);
    if (!domain) return std::unexpected(domain.error().with_context("finish " + what));
    Status started;
    if (!active(*domain)) {
        if (memory_file && exists(*memory_file))
            started = virt::restore_saved_state(connection, *memory_file, std::nullopt, true);
        else if (start)
            started = virt::start_domain(*domain);
    }
    remove_leftovers();
    if (!started)
        return std::unexpected(started.error().with_context(
            "finished " + what + ", but the VM did not start: start it with `virsh start " + vm +
            "`"));
    return "finished " + what + ": the restored VM is defined";
}

}  // namespace vmshadow::engine
