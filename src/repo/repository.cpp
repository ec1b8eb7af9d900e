// SPDX-License-Identifier: MIT
// Repository (repository.h): init, open, the index, locks and leftover cleanup. Reading blobs is
// in repository_read.cpp; restore points, commit records and annotations in
// repository_records.cpp.
#include "repo/repository.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <set>

#include "common/process.h"
#include "repo/format.h"
#include "repo/keys.h"
#include "repo/object_env.h"
#include "repo/repository_detail.h"
#include "storage/local_blob_store.h"

namespace vmshadow::repo {

using nlohmann::json;

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

namespace {

// Without a cache the repository still works (every listing reads the metadata again).
void attach_metadata_cache(ObjectEnv& env, const std::string& id, const StorageOptions& options) {
    if (options.cache_dir == "none") return;
    std::string dir = options.cache_dir.empty() ? default_cache_dir(id) : options.cache_dir;
    if (dir.empty()) return;
    if (auto st = env.attach_cache(dir); !st && options.log)
        options.log("repository " + env.root() +
                    ": working without a metadata cache: " + st.error().message());
}

}  // namespace

// Test hook: with VMSHADOW_TEST_REPO_ON_BLOBS set, a local path given with the default Env is
// opened through an ObjectEnv over the local blob store rooted there (the same files), so the
// whole repository unit suite runs again on the object Env (tests/CMakeLists.txt). Its cache
// lives inside the store's own temp folder, so the test's directory removal takes it along.
Result<std::unique_ptr<ObjectEnv>> test_object_env(const std::string& path) {
    const char* on = std::getenv("VMSHADOW_TEST_REPO_ON_BLOBS");
    if (!on || !*on) return std::unique_ptr<ObjectEnv>();
    auto store = storage::open_local_blob_store(path);
    if (!store) return std::unexpected(store.error());
    // The tests look into (and plant files in) the folders a local repository has; an object
    // store has none until something is stored, so they are made here.
    for (auto sub : {format::kKeysDir, format::kDataDir, format::kIndexDir, format::kCommitsDir,
                     format::kAnnotationsDir, format::kLocksDir, format::kTmpDir})
        if (auto st = Env::posix().make_dir(path + "/" + std::string(sub)); !st)
            return std::unexpected(st.error());
    auto env = ObjectEnv::open(std::shared_ptr<storage::BlobStore>(std::move(*store)));
    if (!env) return env;
    if (auto st = (*env)->attach_cache(path + "/.tmp/vmshadow-cache"); !st)
        return std::unexpected(st.error());
    return env;
}

Repository::Repository(std::string root, Env& env, RepoConfig config, std::optional<MasterKey> key,
                       std::string key_id)
    : root_(std::move(root)),
      env_(env),
      config_(std::move(config)),
      master_key_(key),
      key_id_(std::move(key_id)),
      codec_(std::move(key), config_.zstd_level),
      pack_size_(format::kDefaultPackSize) {}

Status Repository::init(const std::string& location, const InitOptions& options, Env& given_env) {
    std::unique_ptr<ObjectEnv> object;
    if (is_object_location(location)) {
        auto opened = open_s3_env(location, options.storage, true);
        if (!opened) return std::unexpected(opened.error());
        object = std::move(*opened);
    }
    if (!object && &given_env == &Env::posix()) {
        auto hooked = test_object_env(location);
        if (!hooked) return std::unexpected(hooked.error());
        object = std::move(*hooked);
    }
    Env& env = object ? *object : given_env;
    const std::string path = object ? object->root() : location;
    if (env.exists(path + "/" + std::string(format::kConfigFile)))
        return fail(ErrorKind::conflict, "a repository already exists at " + path);
    if (options.encrypt && options.password.empty())
        return fail(ErrorKind::invalid_argument, "an encrypted repository needs a password");
    if (auto st = env.make_dir(path); !st) return st;
    for (auto sub : {format::kKeysDir, format::kDataDir, format::kIndexDir, format::kCommitsDir,
                     format::kAnnotationsDir, format::kLocksDir, format::kTmpDir})
        if (auto st = env.make_dir(path + "/" + std::string(sub)); !st) return st;
    RepoConfig c;
    auto random_id = random_bytes(32);
    if (!random_id) return std::unexpected(random_id.error());
    c.id = sha256(*random_id).hex();
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
        auto master = new_master_key();
        if (!master) return std::unexpected(master.error());
        auto key = add_key(env, path, *master, options.password, options.kdf);
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

bool Repository::is_remote() const {
    return dynamic_cast<const ObjectEnv*>(&env_) != nullptr;
}

Result<std::unique_ptr<Repository>> Repository::open(const std::string& location,
                                                     const OpenOptions& options) {
    if (location.empty())
        return fail(ErrorKind::invalid_argument,
                    "no repository given: pass --repo PATH or set VMSHADOW_REPO");
    std::unique_ptr<ObjectEnv> object;
    if (!options.env && is_object_location(location)) {
        auto opened = open_s3_env(location, options.storage, false);
        if (!opened) return std::unexpected(opened.error());
        object = std::move(*opened);
    }
    if (!object && !options.env) {
        auto hooked = test_object_env(location);
        if (!hooked) return std::unexpected(hooked.error());
        object = std::move(*hooked);
    }
    Env& env = object ? *object : options.env ? *options.env : Env::posix();
    const std::string path = object ? object->root() : location;
    std::string config_path = path + "/" + std::string(format::kConfigFile);
    if (!env.exists(config_path)) {
        // stat() fails alike for a missing config and an unreadable directory: opening it
        // tells them apart, so "permission denied" is not reported as "no repository".
        auto probe = env.open(config_path);
        // On object storage every failure but a missing object is worth its own words (no
        // credentials accepted, no such bucket, the endpoint down).
        if (!probe && object && probe.error().kind() != ErrorKind::not_found)
            return fail(probe.error().kind(),
                        "cannot read the repository at " + path + ": " + probe.error().message());
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
    if (auto* o = dynamic_cast<ObjectEnv*>(&env); o && o->cache_dir().empty())
        attach_metadata_cache(*o, c.id, options.storage);
    std::unique_ptr<Repository> repo(new Repository(path, env, c, std::move(key), key_id));
    if (options.pack_size) repo->pack_size_ = options.pack_size;
    repo->lock_wait_ = options.lock_wait;
    repo->storage_ = options.storage;
    repo->lock_log_ = options.storage.log;
    repo->storage_.log = nullptr;
    repo->owned_env_ = std::move(object);
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

Result<std::unique_ptr<RepoLock>> Repository::lock(LockMode mode,
                                                   const std::string& operation) const {
    return RepoLock::acquire(env_, root_, mode, operation, lock_wait_, lock_log_);
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
    auto packs = list_pack_files();
    if (!packs) return std::unexpected(packs.error());
    for (const auto& pack : *packs)
        if (!index_.has_pack(pack.id)) unindexed.push_back(pack.path);
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

Result<std::vector<Repository::PackFile>> Repository::list_pack_files() const {
    std::string data = dir(format::kDataDir);
    auto files = env_.list_tree(data);
    if (!files) return std::unexpected(files.error());
    std::vector<PackFile> packs;
    for (const auto& f : *files) {
        auto slash = f.name.find('/');
        if (slash == std::string::npos || f.name.find('/', slash + 1) != std::string::npos)
            continue;  // not in a folder of data/: not ours
        std::string name = f.name.substr(slash + 1);
        auto id = name.size() == 64 ? Hash256::from_hex(name) : std::nullopt;
        if (id) packs.push_back(PackFile{*id, data + "/" + f.name, f.size, f.modified});
    }
    return packs;
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
