// SPDX-License-Identifier: MIT
#include "replica/replica_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/atomic_file.h"
#include "common/os_error.h"
#include "common/process.h"
#include "replica/replica_layers.h"
#include "replica/replica_store_impl.h"

namespace vmshadow::replica {
namespace {

namespace fs = std::filesystem;
using detail::StoreRecord;

constexpr std::string_view kLockName = ".lock";
constexpr std::string_view kDefaultState = "replicating";

std::string read_text(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// The flock on <folder>/.lock, with the holder's pid written in it for the next one's error.
Result<UniqueFd> lock_folder(const fs::path& folder) {
    const fs::path file = folder / kLockName;
    UniqueFd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) return fail(os_error("open the replica store lock " + file.string(), errno));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) return fail(os_error("lock " + file.string(), errno));
        auto who = nlohmann::json::parse(read_text(file), nullptr, false);
        std::string holder = "another process";
        if (who.is_object() && who.contains("pid") && who["pid"].is_number_integer())
            holder = "process " + std::to_string(who["pid"].get<long>());
        return fail(ErrorKind::conflict, "replica store " + folder.string() + " is in use by " +
                                             holder + " (it holds " + file.string() + ")");
    }
    std::string text =
        nlohmann::json{{"pid", ::getpid()}, {"start_time", process_start_time(::getpid())}}.dump() +
        "\n";
    // Written in place under the lock (a rename would move the lock off its inode).
    if (::ftruncate(fd.get(), 0) != 0 ||
        ::pwrite(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
        return fail(os_error("write the replica store lock " + file.string(), errno));
    return fd;
}

Status check_identity(const StoreIdentity& id) {
    auto bad = [&](const std::string& why) {
        return fail(ErrorKind::invalid_argument, "replica of VM '" + id.vm_name + "': " + why);
    };
    if (id.vm_uuid.empty()) return bad("no VM uuid");
    if (id.history > kMaxHistory) return bad("history above 24 recovery points");
    if (id.disks.empty() || id.disks.size() > 255) return bad("1..255 disks are replicated");
    std::set<std::string> seen;
    for (const auto& d : id.disks) {
        if (!detail::valid_target(d.target)) return bad("disk target '" + d.target + "'");
        if (!seen.insert(d.target).second) return bad("disk target '" + d.target + "' twice");
        if (d.size == 0 || d.size % 512)
            return bad("disk " + d.target + "'s size is not a positive multiple of 512 bytes");
    }
    return {};
}

// Every file of ours by name that the record does not name: layers of a cycle or an
// operation cut off halfway, and temp files of a record replace that was.
void remove_leftovers(const fs::path& folder, const StoreRecord& record) {
    std::set<std::string> named;
    for (const auto& l : record.stack) named.insert(l.files.begin(), l.files.end());
    for (const auto& [kind, o] : record.overlays) named.insert(o.files.begin(), o.files.end());
    const std::string temp_prefix = "." + std::string(detail::kRecordName) + ".";
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(folder, ec)) {
        const std::string name = entry.path().filename().string();
        bool ours = detail::valid_layer_name(name) || name.starts_with(temp_prefix);
        if (ours && !named.contains(name) && entry.is_regular_file(ec))
            fs::remove(entry.path(), ec);
    }
}

Result<StoreRecord> read_record(const fs::path& folder) {
    const fs::path file = folder / detail::kRecordName;
    std::error_code ec;
    if (!fs::exists(file, ec))
        return fail(ErrorKind::not_found, "no replica store in " + folder.string());
    return detail::parse_record(read_text(file), file.string());
}

}  // namespace

Status ReplicaStore::Impl::save(StoreRecord next) {
    if (auto ok = write_file_atomically(folder / detail::kRecordName, detail::record_to_json(next));
        !ok)
        return fail(ok.error().with_context("replica store " + folder.string()));
    record = std::move(next);
    return {};
}

void ReplicaStore::Impl::remove_files(const std::vector<std::string>& names) const {
    std::error_code ec;
    for (const auto& n : names) fs::remove(path_of(n), ec);
}

namespace {
// A store's Impl for `folder` (made absolute) holding the folder's lock: every way in
// (open, create, adopt) takes the lock before it reads or writes anything there.
Result<std::unique_ptr<ReplicaStore::Impl>> locked_impl(const fs::path& folder) {
    auto impl = std::make_unique<ReplicaStore::Impl>();
    impl->folder = fs::absolute(folder);
    auto lock = lock_folder(impl->folder);
    if (!lock) return fail(lock.error());
    impl->lock = std::move(*lock);
    return impl;
}
}  // namespace

ReplicaStore::ReplicaStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReplicaStore::~ReplicaStore() = default;

Result<std::unique_ptr<ReplicaStore>> ReplicaStore::open(const fs::path& folder) {
    std::error_code ec;
    if (!fs::exists(folder / detail::kRecordName, ec))
        return fail(ErrorKind::not_found, "no replica store in " + folder.string());
    auto locked = locked_impl(folder);
    if (!locked) return fail(locked.error());
    auto impl = std::move(*locked);
    auto record = read_record(impl->folder);
    if (!record) return fail(record.error());
    impl->record = std::move(*record);
    remove_leftovers(impl->folder, impl->record);
    return std::unique_ptr<ReplicaStore>(new ReplicaStore(std::move(impl)));
}

Result<std::unique_ptr<ReplicaStore>> ReplicaStore::create(const fs::path& folder,
                                                           const StoreIdentity& identity) {
    if (auto ok = check_identity(identity); !ok) return fail(ok.error());
    std::error_code ec;
    fs::create_directories(folder, ec);
    if (ec) return fail(os_error("create the replica store folder " + folder.string(), ec));
    auto locked = locked_impl(folder);
    if (!locked) return fail(locked.error());
    auto impl = std::move(*locked);
    StoreRecord next;
    auto existing = read_record(impl->folder);
    if (existing) {
        if (existing->identity.vm_uuid != identity.vm_uuid)
            return fail(ErrorKind::conflict, "replica store " + impl->folder.string() +
                                                 " holds VM " + existing->identity.vm_uuid +
                                                 ", not " + identity.vm_uuid);
        next = std::move(*existing);
    } else if (existing.error().kind() != ErrorKind::not_found) {
        return fail(existing.error());
    } else {
        next.state = kDefaultState;
    }
    // Points keep the disk sizes of their layers; a changed disk list needs a full cycle
    // (can_apply says so).
    next.identity = identity;
    remove_leftovers(impl->folder, next);
    if (auto ok = impl->save(std::move(next)); !ok) return fail(ok.error());
    // A smaller history is applied now; a prune that fails is finished by the next commit.
    (void)impl->prune();
    return std::unique_ptr<ReplicaStore>(new ReplicaStore(std::move(impl)));
}

Result<std::unique_ptr<ReplicaStore>> ReplicaStore::adopt(const fs::path& folder,
                                                          const StoreIdentity& identity,
                                                          const std::vector<fs::path>& images,
                                                          const std::string& token,
                                                          const std::string& time) {
    if (auto ok = check_identity(identity); !ok) return fail(ok.error());
    if (images.size() != identity.disks.size())
        return fail(ErrorKind::invalid_argument,
                    "adopt: " + std::to_string(images.size()) + " images for " +
                        std::to_string(identity.disks.size()) + " disks");
    std::error_code ec;
    if (fs::exists(folder / detail::kRecordName, ec))
        return fail(ErrorKind::conflict, "replica store " + folder.string() +
                                             " exists already; remove it before adopting disks");
    fs::create_directories(folder, ec);
    if (ec) return fail(os_error("create the replica store folder " + folder.string(), ec));
    auto locked = locked_impl(folder);
    if (!locked) return fail(locked.error());
    auto impl = std::move(*locked);
    StoreRecord next;
    next.identity = identity;
    next.state = kDefaultState;
    next.next_seq = 1;
    remove_leftovers(impl->folder, next);
    detail::LayerSet base;
    auto undo = [&] { impl->remove_files(base.files); };
    for (std::size_t d = 0; d < images.size(); ++d) {
        const fs::path image = fs::absolute(images[d]);
        auto info = detail::image_info(image);
        if (!info) return undo(), fail(info.error().with_context("adopt"));
        if (info->virtual_size != identity.disks[d].size)
            return undo(), fail(ErrorKind::invalid_argument,
                                "adopt: image " + image.string() + " holds " +
                                    std::to_string(info->virtual_size) + " bytes, disk " +
                                    identity.disks[d].target + " has " +
                                    std::to_string(identity.disks[d].size));
        const std::string name = detail::layer_name(0, identity.disks[d].target);
        fs::remove(impl->path_of(name), ec);
        if (auto ok = detail::create_overlay(impl->path_of(name), image.string(), info->format);
            !ok)
            return undo(), fail(ok.error());
        base.files.push_back(name);
        base.sizes.push_back(info->virtual_size);
        base.backing.push_back(image.string());
    }
    next.points.push_back({0, token, time, "crash", base.files});
    next.stack.push_back(base);
    if (auto ok = impl->save(std::move(next)); !ok) return undo(), fail(ok.error());
    return std::unique_ptr<ReplicaStore>(new ReplicaStore(std::move(impl)));
}

Status ReplicaStore::seed(const std::vector<fs::path>& images, const std::string& token,
                          const std::string& time) {
    const StoreIdentity& identity = impl_->record.identity;
    if (!impl_->record.points.empty() || impl_->cycle_active)
        return fail(ErrorKind::conflict, "the replica of VM " + identity.vm_name +
                                             " holds a point already: it is not seeded");
    if (images.size() != identity.disks.size())
        return fail(ErrorKind::invalid_argument,
                    "seed: " + std::to_string(images.size()) + " images for " +
                        std::to_string(identity.disks.size()) + " disks");
    for (std::size_t d = 0; d < images.size(); ++d) {
        auto info = detail::image_info(images[d]);
        if (!info) return fail(info.error().with_context("seed"));
        if (info->format != "qcow2" || info->virtual_size != identity.disks[d].size)
            return fail(ErrorKind::invalid_argument,
                        "seed: image " + images[d].string() + " is " + info->format + " of " +
                            std::to_string(info->virtual_size) + " bytes, disk " +
                            identity.disks[d].target + " is qcow2 of " +
                            std::to_string(identity.disks[d].size));
    }
    detail::StoreRecord next = impl_->record;
    detail::LayerSet base;
    for (std::size_t d = 0; d < images.size(); ++d) {
        const std::string name = detail::layer_name(0, identity.disks[d].target);
        std::error_code ec;
        fs::rename(images[d], impl_->path_of(name), ec);
        if (ec) {
            impl_->remove_files(base.files);
            return fail(os_error("seed: move " + images[d].string() + " into the store", ec));
        }
        base.files.push_back(name);
        base.sizes.push_back(identity.disks[d].size);
    }
    next.points = {{0, token, time, "crash", base.files}};
    next.stack = {base};
    next.next_seq = 1;
    if (auto ok = impl_->save(std::move(next)); !ok) {
        impl_->remove_files(base.files);
        return ok;
    }
    return {};
}

const StoreIdentity& ReplicaStore::identity() const {
    return impl_->record.identity;
}
const std::vector<RecoveryPoint>& ReplicaStore::points() const {
    return impl_->record.points;
}
const fs::path& ReplicaStore::folder() const {
    return impl_->folder;
}
const std::string& ReplicaStore::state() const {
    return impl_->record.state;
}

const RecoveryPoint* ReplicaStore::latest() const {
    const auto& p = impl_->record.points;
    return p.empty() ? nullptr : &p.back();
}

const RecoveryPoint* ReplicaStore::find(std::uint64_t seq) const {
    for (const auto& p : impl_->record.points)
        if (p.seq == seq) return &p;
    return nullptr;
}

Status ReplicaStore::set_history(unsigned history) {
    if (history > kMaxHistory)
        return fail(ErrorKind::invalid_argument, "history of " + std::to_string(history) +
                                                     " recovery points: at most 24 are kept");
    StoreRecord next = impl_->record;
    next.identity.history = history;
    if (auto ok = impl_->save(std::move(next)); !ok) return ok;
    return impl_->prune();
}

Status ReplicaStore::set_state(const std::string& state) {
    StoreRecord next = impl_->record;
    next.state = state;
    return impl_->save(std::move(next));
}

Result<std::vector<fs::path>> ReplicaStore::chain(std::uint64_t seq, std::size_t disk) const {
    const RecoveryPoint* point = find(seq);
    if (!point)
        return fail(ErrorKind::not_found, "replica of VM '" + identity().vm_name +
                                              "' holds no recovery point " + std::to_string(seq));
    if (disk >= point->layers.size())
        return fail(ErrorKind::invalid_argument, "point " + std::to_string(seq) + " has " +
                                                     std::to_string(point->layers.size()) +
                                                     " disks, not " + std::to_string(disk + 1));
    const auto& stack = impl_->record.stack;
    std::vector<fs::path> out;
    for (std::size_t i = detail::stack_index(impl_->record, *point) + 1; i-- > 0;)
        out.push_back(impl_->path_of(stack[i].files[disk]));
    if (!stack.front().backing.empty()) out.push_back(stack.front().backing[disk]);
    return out;
}

Result<std::vector<fs::path>> ReplicaStore::make_overlays(const std::string& kind,
                                                          std::uint64_t seq) {
    if (kind != "test" && kind != "live")
        return fail(ErrorKind::invalid_argument, "overlay kind '" + kind + "'");
    if (impl_->record.overlays.contains(kind))
        return fail(ErrorKind::conflict, "replica of VM '" + identity().vm_name + "' has " + kind +
                                             " overlays already (above point " +
                                             std::to_string(impl_->record.overlays[kind].seq) +
                                             ")");
    const RecoveryPoint* point = find(seq);
    if (!point)
        return fail(ErrorKind::not_found, "replica of VM '" + identity().vm_name +
                                              "' holds no recovery point " + std::to_string(seq));
    const auto& layers = impl_->record.stack[detail::stack_index(impl_->record, *point)];
    detail::Overlays made{seq, {}};
    std::vector<fs::path> paths;
    auto undo = [&] { impl_->remove_files(made.files); };
    for (const auto& below : layers.files) {
        // The target is the layer's name without its "p<seq>-" and ".qcow2".
        std::string target = below.substr(below.find('-') + 1);
        target.resize(target.size() - std::string_view(".qcow2").size());
        std::string name = kind + "-" + target + ".qcow2";
        std::error_code ec;
        fs::remove(impl_->path_of(name), ec);
        if (auto ok = detail::create_overlay(impl_->path_of(name), below, "qcow2"); !ok)
            return undo(), fail(ok.error());
        made.files.push_back(name);
        paths.push_back(impl_->path_of(name));
    }
    StoreRecord next = impl_->record;
    next.overlays[kind] = made;
    if (auto ok = impl_->save(std::move(next)); !ok) return undo(), fail(ok.error());
    return paths;
}

Status ReplicaStore::drop_overlays(const std::string& kind) {
    auto found = impl_->record.overlays.find(kind);
    if (found == impl_->record.overlays.end()) return {};
    std::vector<std::string> files = found->second.files;
    // The record first: a crash before the files go leaves leftovers, which open() removes.
    StoreRecord next = impl_->record;
    next.overlays.erase(kind);
    if (auto ok = impl_->save(std::move(next)); !ok) return ok;
    impl_->remove_files(files);
    return impl_->prune();
}

Status ReplicaStore::commit_failover(std::uint64_t seq) {
    const RecoveryPoint* point = find(seq);
    if (!point)
        return fail(ErrorKind::not_found, "replica of VM '" + identity().vm_name +
                                              "' holds no recovery point " + std::to_string(seq));
    for (const auto& [kind, o] : impl_->record.overlays)
        if (o.seq != seq)
            return fail(ErrorKind::conflict, "replica of VM '" + identity().vm_name + "' has " +
                                                 kind + " overlays above point " +
                                                 std::to_string(o.seq) + "; remove them first");
    StoreRecord next = impl_->record;
    const std::size_t at = detail::stack_index(next, *point);
    std::vector<std::string> dropped;
    for (std::size_t i = at + 1; i < next.stack.size(); ++i)
        dropped.insert(dropped.end(), next.stack[i].files.begin(), next.stack[i].files.end());
    next.stack.resize(at + 1);  // the layers below stay: they are the VM's backing files
    next.points = {*point};
    if (auto ok = impl_->save(std::move(next)); !ok) return ok;
    impl_->remove_files(dropped);
    return {};
}

}  // namespace vmshadow::replica
