// SPDX-License-Identifier: MIT
#include "repo/repository.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <ctime>
#include <set>

#include "common/process.h"
#include "repo/format.h"
#include "repo/keys.h"

namespace vmshadow::repo {
namespace {

using nlohmann::json;
constexpr std::string_view kCommitDomain = "commit";
constexpr std::string_view kAnnotationDomain = "annotation";

bool is_hex_name(const std::string& name) {
    return name.size() == 64 && Hash256::from_hex(name).has_value();
}

Result<json> parse_json(ByteView bytes, const std::string& what) {
    json j = json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return fail(ErrorKind::corruption, what + " is not valid JSON");
    return j;
}

// Writes a content-addressed sealed file; returns its id.
Result<Hash256> write_sealed(const Repository& repo, std::string_view subdir, ByteView sealed) {
    Hash256 id = sha256(sealed);
    if (auto st = write_file_atomic(repo.env(), repo.dir(format::kTmpDir), repo.dir(subdir),
                                    id.hex(), sealed);
        !st)
        return std::unexpected(st.error());
    return id;
}

}  // namespace

Repository::Repository(std::string root, Env& env, RepoConfig config, std::optional<MasterKey> key,
                       std::string key_id)
    : root_(std::move(root)),
      env_(env),
      config_(std::move(config)),
      master_key_(key),
      key_id_(std::move(key_id)),
      codec_(std::move(key), config_.zstd_level),
      pack_size_(format::kDefaultPackSize) {}

Status Repository::init(const std::string& path, const InitOptions& options, Env& env) {
    if (env.exists(path + "/" + std::string(format::kConfigFile)))
        return fail(ErrorKind::conflict, "a repository already exists at " + path);
    if (options.encrypt && options.password.empty())
        return fail(ErrorKind::invalid_argument, "an encrypted repository needs a password");
    if (auto st = env.make_dir(path); !st) return st;
    for (auto sub : {format::kKeysDir, format::kDataDir, format::kIndexDir, format::kCommitsDir,
                     format::kAnnotationsDir, format::kLocksDir, format::kTmpDir})
        if (auto st = env.make_dir(path + "/" + std::string(sub)); !st) return st;
    RepoConfig c;
    c.id = sha256(random_bytes(32)).hex();
    c.chunk_size = options.chunk_size ? options.chunk_size : format::kDefaultChunkSize;
    c.map_fanout = options.map_fanout ? options.map_fanout : format::kDefaultMapFanout;
    c.zstd_level = options.zstd_level ? options.zstd_level : format::kDefaultZstdLevel;
    c.encrypted = options.encrypt;
    c.format_version = options.format_version ? options.format_version : format::kVersion;
    if (c.format_version < format::kMinReadable || c.format_version > format::kVersion)
        return fail(ErrorKind::invalid_argument,
                    "format version " + std::to_string(c.format_version) + " cannot be made");
    if (c.chunk_size < 4096 || c.chunk_size > (16u << 20) || (c.chunk_size & (c.chunk_size - 1)))
        return fail(ErrorKind::invalid_argument,
                    "chunk size must be a power of two between 4 KiB and 16 MiB");
    if (c.map_fanout < 2 || c.map_fanout > 65536)
        return fail(ErrorKind::invalid_argument, "map fanout must be between 2 and 65536");
    if (options.encrypt) {
        auto key = add_key(env, path, new_master_key(), options.password, options.kdf);
        if (!key) return std::unexpected(key.error());
    }
    json j{{"format_version", c.format_version},
           {"id", c.id},
           {"chunk_size", c.chunk_size},
           {"map_fanout", c.map_fanout},
           {"compression", "zstd"},
           {"zstd_level", c.zstd_level},
           {"encryption", c.encrypted ? "aes-256-gcm" : "none"},
           {"id_hash", c.encrypted ? "hmac-sha256" : "sha256"}};
    std::string text = j.dump(2) + "\n";
    // The config is written last: a repository exists once its config does.
    return write_file_atomic(env, path + "/" + std::string(format::kTmpDir), path,
                             std::string(format::kConfigFile), as_bytes(text));
}

Result<std::unique_ptr<Repository>> Repository::open(const std::string& path,
                                                     const OpenOptions& options) {
    Env& env = options.env ? *options.env : Env::posix();
    std::string config_path = path + "/" + std::string(format::kConfigFile);
    if (path.empty())
        return fail(ErrorKind::invalid_argument,
                    "no repository given: pass --repo PATH or set VMSHADOW_REPO");
    if (!env.exists(config_path)) {
        // stat() fails alike for a missing config and an unreadable directory: opening it
        // tells them apart, so "permission denied" is not reported as "no repository".
        auto probe = env.open(config_path);
        if (!probe && probe.error().kind() == ErrorKind::permission)
            return fail(ErrorKind::permission,
                        "cannot read the repository at " + path + ": " + probe.error().message());
        return fail(ErrorKind::not_found, "no vmshadow repository at " + path +
                                              " (create one with `vmshadow repo init " + path +
                                              "`)");
    }
    auto bytes = read_file(env, config_path);
    if (!bytes) return std::unexpected(bytes.error());
    auto j = parse_json(*bytes, config_path);
    if (!j) return std::unexpected(j.error());
    RepoConfig c;
    try {
        c.format_version = j->at("format_version").get<int>();
        if (c.format_version > format::kMaxReadable || c.format_version < format::kMinReadable)
            return fail(ErrorKind::unsupported,
                        "repository " + path + " has format version " +
                            std::to_string(c.format_version) + "; this vmshadow reads versions " +
                            std::to_string(format::kMinReadable) + " to " +
                            std::to_string(format::kMaxReadable) + " (upgrade vmshadow)");
        c.id = j->at("id").get<std::string>();
        c.chunk_size = j->at("chunk_size").get<std::uint32_t>();
        c.map_fanout = j->at("map_fanout").get<std::uint32_t>();
        c.zstd_level = j->value("zstd_level", format::kDefaultZstdLevel);
        c.encrypted = j->at("encryption").get<std::string>() != "none";
    } catch (const json::exception& e) {
        return fail(ErrorKind::corruption, config_path + " is damaged: " + e.what());
    }
    if (c.chunk_size < 4096 || c.map_fanout < 2)
        return fail(ErrorKind::corruption, config_path + " has impossible values");
    std::optional<MasterKey> key;
    std::string key_id;
    if (c.encrypted) {
        if (!options.password)
            return fail(ErrorKind::permission, "repository " + path +
                                                   " is encrypted: a password "
                                                   "is needed");
        auto password = options.password();
        if (!password) return std::unexpected(password.error());
        auto opened = open_key(env, path, *password);
        if (!opened) return std::unexpected(opened.error().with_context("repository " + path));
        key = opened->key;
        key_id = opened->key_id;
    }
    std::unique_ptr<Repository> repo(new Repository(path, env, c, std::move(key), key_id));
    if (options.pack_size) repo->pack_size_ = options.pack_size;
    return repo;
}

Result<std::vector<PackInfo>> Repository::read_index_file(const std::string& name) const {
    std::string path = dir(format::kIndexDir) + "/" + name;
    auto bytes = read_file(env_, path);
    Result<std::vector<PackInfo>> packs =
        bytes ? decode_index_file(*bytes, codec_) : fail(bytes.error());
    if (packs && sha256(*bytes) != *Hash256::from_hex(name))
        packs = fail(ErrorKind::corruption, "content does not match its name");
    if (!packs) return std::unexpected(packs.error().with_context("index file " + path));
    return packs;
}

Result<std::vector<std::string>> Repository::index_file_names() const {
    auto names = env_.list(dir(format::kIndexDir));
    if (!names) return std::unexpected(names.error());
    std::erase_if(*names, [](const std::string& n) { return !is_hex_name(n); });  // not ours
    std::sort(names->begin(), names->end());
    return names;
}

Result<std::vector<std::pair<Hash256, std::vector<PackInfo>>>> Repository::read_index_files()
    const {
    std::vector<std::pair<Hash256, std::vector<PackInfo>>> out;
    auto names = index_file_names();
    if (!names) return std::unexpected(names.error());
    for (const auto& name : *names) {
        auto packs = read_index_file(name);
        if (!packs)
            return fail(packs.error().kind(),
                        packs.error().message() +
                            " (rebuild the index from the packs: `vmshadow repo repair index`)");
        out.emplace_back(*Hash256::from_hex(name), std::move(*packs));
    }
    return out;
}

Status Repository::load_index(std::vector<Error>* damaged) {
    index_ = Index{};
    auto names = index_file_names();
    if (!names) return std::unexpected(names.error());
    for (const auto& name : *names) {
        auto packs = read_index_file(name);
        if (!packs) {
            if (!damaged)
                return fail(packs.error().kind(), packs.error().message() +
                                                      " (`vmshadow repo repair index` rebuilds "
                                                      "the index from the packs)");
            damaged->push_back(packs.error());
            continue;
        }
        for (const auto& p : *packs) index_.add_pack(p);
    }
    return {};
}

namespace {

// Frames this thread decoded last. Restore, mount and verify read a disk's chunks in order,
// so without it each 64 KiB read would decode its whole frame again. Keyed by the
// Repository object (its serial number: each open sees the files as they are then), pack
// and offset; packs are write-once, and every blob taken from a cached frame is verified
// against its id, so a slot can never serve wrong data.
class FrameCache {
  public:
    const Bytes* find(std::uint64_t repo, const Hash256& pack, std::uint64_t offset) const {
        for (const auto& s : slots_)
            if (s.plain && s.repo == repo && s.offset == offset && s.pack == pack)
                return s.plain.get();
        return nullptr;
    }
    void put(std::uint64_t repo, const Hash256& pack, std::uint64_t offset, Bytes plain) {
        slots_[next_] = Slot{repo, pack, offset, std::make_unique<Bytes>(std::move(plain))};
        next_ = (next_ + 1) % slots_.size();
    }

  private:
    struct Slot {
        std::uint64_t repo = 0;
        Hash256 pack;
        std::uint64_t offset = 0;
        std::unique_ptr<Bytes> plain;
    };
    std::array<Slot, 4> slots_;
    std::size_t next_ = 0;
};

FrameCache& thread_frames() {
    thread_local FrameCache cache;
    return cache;
}

}  // namespace

std::uint64_t Repository::next_serial() {
    static std::atomic<std::uint64_t> next{1};
    return next++;
}

Result<Bytes> Repository::read_blob(const Hash256& id) const {
    auto loc = index_.find(id);
    if (!loc)
        return fail(ErrorKind::corruption,
                    "chunk " + id.hex() +
                        " is not in the index (data missing; run `vmshadow repo "
                        "check`)");
    const BlobEntry& entry = loc->entry;
    if (entry.framed)
        if (const Bytes* frame = thread_frames().find(serial_, *loc->pack, entry.offset))
            if (auto blob = blob_of(codec_, entry, *frame)) return blob;
    std::string path = pack_path(dir(format::kDataDir), *loc->pack);
    std::shared_ptr<RandomAccessFile> file;
    {
        std::lock_guard lock(files_mutex_);
        auto it = files_.find(*loc->pack);
        if (it != files_.end()) file = it->second;
    }
    auto context = [&] { return "chunk " + id.short_hex() + " in pack " + path; };
    if (!file) {
        auto opened = env_.open(path);
        if (!opened) {
            Error e = opened.error();
            if (e.kind() == ErrorKind::not_found) e = Error(ErrorKind::corruption, e.message());
            return std::unexpected(e.with_context(context()));
        }
        file = std::move(*opened);
        std::lock_guard lock(files_mutex_);
        if (files_.size() >= 64) files_.erase(files_.begin());  // bound open descriptors
        files_.emplace(*loc->pack, file);
    }
    Bytes stored(entry.length);
    if (auto st = file->read_at(entry.offset, stored); !st)
        return std::unexpected(st.error().with_context(context()));
    auto plain = decode_stored(codec_, entry, stored);
    if (!plain) return std::unexpected(plain.error().with_context(context()));
    if (!entry.framed) return plain;
    auto blob = blob_of(codec_, entry, *plain);
    if (!blob) return std::unexpected(blob.error().with_context(context()));
    thread_frames().put(serial_, *loc->pack, entry.offset, std::move(*plain));
    return blob;
}

Hash256 Repository::point_id(const RestorePoint& point) const {
    std::string text = manifest_to_json(point).dump();
    return codec_.id_of(as_bytes(text));
}

Result<PointListing> Repository::list_points() const {
    PointListing out;
    auto names = env_.list(dir(format::kCommitsDir));
    if (!names) return std::unexpected(names.error());
    std::set<Hash256> seen;
    std::unordered_map<Hash256, std::size_t, Hash256Hasher> by_id;
    for (const auto& name : *names) {
        if (!is_hex_name(name)) continue;
        std::string path = dir(format::kCommitsDir) + "/" + name;
        auto bytes = read_file(env_, path);
        Result<Bytes> plain = bytes ? codec_.unseal(*bytes, kCommitDomain) : bytes;
        if (plain && sha256(*bytes) != *Hash256::from_hex(name))
            plain = fail(ErrorKind::corruption, "file content does not match its name");
        Result<json> j = plain ? parse_json(*plain, "commit record") : fail(plain.error());
        if (!j) {
            out.damaged.push_back(j.error().with_context("commit record " + path));
            out.damaged_files.push_back(path);
            continue;
        }
        if (j->value("format_version", 0) > format::kRecordVersion) {
            out.damaged.push_back(
                Error(ErrorKind::unsupported,
                      "commit record " + path + " has a newer format version (upgrade vmshadow)"));
            continue;
        }
        bool record_damaged = false;
        for (const auto& m : j->value("points", json::array())) {
            auto p = manifest_from_json(m);
            if (!p) {
                out.damaged.push_back(p.error().with_context("commit record " + path));
                if (!record_damaged) out.damaged_files.push_back(path);
                record_damaged = true;
                continue;
            }
            p->id = point_id(*p);
            p->commit = *Hash256::from_hex(name);
            if (!seen.insert(p->id).second) continue;  // a forget was interrupted
            by_id[p->id] = out.points.size();
            out.points.push_back(std::move(*p));
        }
    }
    std::stable_sort(out.points.begin(), out.points.end(), [](const auto& a, const auto& b) {
        return a.time_us != b.time_us ? a.time_us < b.time_us : a.id < b.id;
    });
    by_id.clear();
    for (std::size_t i = 0; i < out.points.size(); ++i) by_id[out.points[i].id] = i;
    auto ann = env_.list(dir(format::kAnnotationsDir));
    if (!ann) return std::unexpected(ann.error());
    for (const auto& name : *ann) {
        if (!is_hex_name(name)) continue;
        std::string path = dir(format::kAnnotationsDir) + "/" + name;
        auto bytes = read_file(env_, path);
        Result<Bytes> plain = bytes ? codec_.unseal(*bytes, kAnnotationDomain) : bytes;
        Result<json> j = plain ? parse_json(*plain, "annotation") : fail(plain.error());
        if (!j) {
            out.damaged.push_back(j.error().with_context("annotation " + path));
            out.damaged_files.push_back(path);
            continue;
        }
        auto point = Hash256::from_hex(j->value("point", ""));
        if (!point || !by_id.contains(*point)) {  // its point was forgotten
            out.orphan_annotations.push_back(path);
            continue;
        }
        Annotation a{*Hash256::from_hex(name), *point, j->value("time", ""), j->value("kind", ""),
                     j->value("data", json::object())};
        out.points[by_id[*point]].annotations.push_back(std::move(a));
    }
    for (auto& p : out.points)
        std::sort(p.annotations.begin(), p.annotations.end(),
                  [](const auto& a, const auto& b) { return a.time < b.time; });
    return out;
}

Result<RestorePoint> Repository::resolve(const PointListing& listing, std::string_view spec) {
    if (auto at = spec.find('@'); at != std::string_view::npos) {
        std::string_view name = spec.substr(0, at), which = spec.substr(at + 1);
        if (which != "latest")
            return fail(ErrorKind::invalid_argument,
                        "unknown point selector '@" + std::string(which) + "' (use NAME@latest)");
        if (name.empty())
            return fail(ErrorKind::invalid_argument,
                        "'" + std::string(spec) + "' names no VM or image (use NAME@latest)");
        for (auto it = listing.points.rbegin(); it != listing.points.rend(); ++it)
            if (it->vm == name) return *it;
        return fail(ErrorKind::not_found, "no restore point of '" + std::string(name) + "'");
    }
    // Not an id at all (a VM name without @latest): the spec is wrong, not the point missing.
    if (spec.find_first_not_of("0123456789abcdef") != std::string_view::npos)
        return fail(
            ErrorKind::invalid_argument,
            "'" + std::string(spec) + "' is neither a point id (hex digits) nor NAME@latest");
    if (spec.size() < 4)
        return fail(ErrorKind::invalid_argument, "point id prefix '" + std::string(spec) +
                                                     "' is too short (use at least 4 digits)");
    const RestorePoint* found = nullptr;
    for (const auto& p : listing.points) {
        if (p.id.hex().starts_with(spec)) {
            if (found)
                return fail(ErrorKind::invalid_argument,
                            "point id prefix '" + std::string(spec) + "' is ambiguous");
            found = &p;
        }
    }
    if (!found) return fail(ErrorKind::not_found, "no restore point " + std::string(spec));
    return *found;
}

Result<Hash256> Repository::write_index_file(const std::vector<PackInfo>& packs) const {
    return write_sealed(*this, format::kIndexDir, encode_index_file(packs, codec_, pack_version()));
}

Result<Hash256> Repository::write_commit(std::vector<RestorePoint>& points) const {
    json arr = json::array();
    for (auto& p : points) {
        p.id = point_id(p);
        arr.push_back(manifest_to_json(p));
    }
    json j{{"format_version", format::kRecordVersion},
           {"time", iso8601_utc(::time(nullptr))},
           {"points", std::move(arr)}};
    std::string text = j.dump();
    auto id = write_sealed(*this, format::kCommitsDir, codec_.seal(as_bytes(text), kCommitDomain));
    if (id)
        for (auto& p : points) p.commit = *id;
    return id;
}

Status Repository::annotate(const Hash256& point, const std::string& kind, const json& data) const {
    json j{{"format_version", format::kRecordVersion},
           {"point", point.hex()},
           {"time", iso8601_utc(::time(nullptr))},
           {"kind", kind},
           {"data", data},
           {"nonce", sha256(random_bytes(16)).short_hex()}};  // equal annotations stay distinct
    std::string text = j.dump();
    auto id = write_sealed(*this, format::kAnnotationsDir,
                           codec_.seal(as_bytes(text), kAnnotationDomain));
    if (!id) return std::unexpected(id.error());
    return {};
}

Status Repository::forget(const std::vector<Hash256>& points) const {
    std::set<Hash256> gone(points.begin(), points.end());
    auto names = env_.list(dir(format::kCommitsDir));
    if (!names) return std::unexpected(names.error());
    for (const auto& name : *names) {
        if (!is_hex_name(name)) continue;
        std::string path = dir(format::kCommitsDir) + "/" + name;
        auto bytes = read_file(env_, path);
        if (!bytes) return std::unexpected(bytes.error());
        auto plain = codec_.unseal(*bytes, kCommitDomain);
        if (!plain) continue;  // damaged: check reports it; forget leaves it alone
        auto j = parse_json(*plain, path);
        if (!j) continue;
        json kept = json::array();
        bool changed = false;
        for (const auto& m : j->value("points", json::array())) {
            auto p = manifest_from_json(m);
            if (p && gone.contains(point_id(*p)))
                changed = true;
            else
                kept.push_back(m);
        }
        if (!changed) continue;
        if (!kept.empty()) {
            (*j)["points"] = std::move(kept);
            std::string text = j->dump();
            auto id = write_sealed(*this, format::kCommitsDir,
                                   codec_.seal(as_bytes(text), kCommitDomain));
            if (!id) return std::unexpected(id.error());
        }
        if (auto st = env_.remove(path); !st) return st;
        if (auto st = env_.sync_dir(dir(format::kCommitsDir)); !st) return st;
    }
    return {};
}

Result<std::size_t> Repository::quarantine(const std::string& path) const {
    std::string parent = path.substr(0, path.rfind('/'));
    std::string kind = parent.substr(parent.rfind('/') + 1);
    std::string name = path.substr(path.rfind('/') + 1);
    std::size_t kept = 0;
    if (kind == format::kCommitsDir) {
        auto bytes = read_file(env_, path);
        if (!bytes && bytes.error().kind() != ErrorKind::corruption)
            return std::unexpected(bytes.error());
        auto plain = bytes ? codec_.unseal(*bytes, kCommitDomain) : Result<Bytes>(bytes);
        auto j = plain ? parse_json(*plain, path) : Result<json>(fail(plain.error()));
        if (j && j->value("format_version", 0) <= format::kRecordVersion) {
            json sound = json::array();
            for (const auto& m : j->value("points", json::array()))
                if (manifest_from_json(m)) sound.push_back(m);
            if (!sound.empty()) {
                kept = sound.size();
                (*j)["points"] = std::move(sound);
                std::string text = j->dump();
                auto id = write_sealed(*this, format::kCommitsDir,
                                       codec_.seal(as_bytes(text), kCommitDomain));
                if (!id) return std::unexpected(id.error());
            }
        }
    }
    std::string qdir = dir(format::kQuarantineDir);
    if (auto st = env_.make_dir(qdir); !st) return std::unexpected(st.error());
    if (auto st = env_.rename(path, qdir + "/" + kind + "-" + name); !st)
        return std::unexpected(st.error());
    if (auto st = env_.sync_dir(qdir); !st) return std::unexpected(st.error());
    if (auto st = env_.sync_dir(parent); !st) return std::unexpected(st.error());
    return kept;
}

Result<std::unique_ptr<RepoLock>> Repository::lock(LockMode mode,
                                                   const std::string& operation) const {
    return RepoLock::acquire(env_, root_, mode, operation);
}

namespace {

// unique_temp_name() makes "<name>-<pid>-<n>": whether that pid is another live process.
bool temp_file_writer_alive(const std::string& name) {
    auto last = name.rfind('-');
    if (last == std::string::npos || last == 0) return false;
    auto before = name.rfind('-', last - 1);
    if (before == std::string::npos) return false;
    std::string digits = name.substr(before + 1, last - before - 1);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return false;
    pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid == ::getpid()) return false;
    return process_running(pid);  // a zombie wrote nothing more
}

}  // namespace

Result<std::size_t> Repository::cleanup_leftovers() const {
    std::size_t removed = 0;
    auto tmp = env_.list(dir(format::kTmpDir));
    if (!tmp) return std::unexpected(tmp.error());
    for (const auto& name : *tmp) {
        // Another process may be writing its lock file through tmp/ right now (locking is the
        // one write that comes before holding a lock): leave temp files of live processes.
        if (temp_file_writer_alive(name)) continue;
        if (auto st = env_.remove(dir(format::kTmpDir) + "/" + name); !st)
            return std::unexpected(st.error());
        ++removed;
    }
    // Packs no index names: normally written by a run that died before its index, referenced
    // by nothing. But a lost or damaged index file leaves committed data unindexed too, and
    // deleting it would lose restore points: such packs are removed only while the index
    // holds every committed point's maps, and only when their trailer can be read.
    std::vector<std::string> unindexed;
    auto subdirs = env_.list(dir(format::kDataDir));
    if (!subdirs) return std::unexpected(subdirs.error());
    for (const auto& sub : *subdirs) {
        std::string d = dir(format::kDataDir) + "/" + sub;
        auto packs = env_.list(d);
        if (!packs) continue;
        for (const auto& name : *packs) {
            auto id = Hash256::from_hex(name);
            if (id && !index_.has_pack(*id)) unindexed.push_back(d + "/" + name);
        }
    }
    if (unindexed.empty() || !index_covers_points()) return removed;
    std::set<std::string> synced;
    for (const auto& path : unindexed) {
        auto file = env_.open(path);
        if (!file || !read_pack_trailer(**file, codec_)) continue;  // damaged: keep for repair
        file->reset();
        if (auto st = env_.remove(path); !st) return std::unexpected(st.error());
        ++removed;
        synced.insert(path.substr(0, path.rfind('/')));
    }
    for (const auto& d : synced)
        if (auto st = env_.sync_dir(d); !st) return std::unexpected(st.error());
    return removed;
}

bool Repository::index_covers_points() const {
    auto listing = list_points();
    if (!listing || !listing->damaged.empty()) return false;
    auto indexed = [&](const MapRef& map) {
        return map.root.is_zero() || index_.contains(map.root);
    };
    for (const auto& p : listing->points) {
        for (const auto& d : p.disks)
            if (!indexed(d.map)) return false;
        for (const auto& f : p.files)
            if (!indexed(f.map)) return false;
    }
    return true;
}

}  // namespace vmshadow::repo
