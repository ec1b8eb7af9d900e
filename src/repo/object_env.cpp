// SPDX-License-Identifier: MIT
#include "repo/object_env.h"

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "common/os_error.h"
#include "common/process.h"
#include "repo/format.h"
#include "repo/repository_detail.h"
#include "storage/s3_blob_store.h"

namespace vmshadow::repo {
namespace {

namespace fs = std::filesystem;

Env& local() {
    return Env::posix();
}

// A spooled file reports the repository's path (PackWriter renames by it), not the spool's.
class SpoolFile final : public WritableFile {
  public:
    SpoolFile(std::unique_ptr<WritableFile> inner, std::string path)
        : inner_(std::move(inner)), path_(std::move(path)) {}
    Status append(ByteView data) override { return inner_->append(data); }
    // The put that follows is what makes it durable: fsyncing scratch buys nothing.
    Status sync() override { return {}; }
    Status close() override { return inner_->close(); }
    const std::string& path() const override { return path_; }

  private:
    std::unique_ptr<WritableFile> inner_;
    std::string path_;
};

// A file created outside tmp/: kept in memory and stored by close() in one put that fails if
// the object exists (the O_EXCL of PosixEnv::create).
class StoredWriter final : public WritableFile {
  public:
    StoredWriter(std::shared_ptr<storage::BlobStore> store, std::string key, std::string path)
        : store_(std::move(store)), key_(std::move(key)), path_(std::move(path)) {}
    Status append(ByteView data) override {
        if (closed_) return fail(ErrorKind::internal, path_ + " is closed");
        data_.insert(data_.end(), data.begin(), data.end());
        return {};
    }
    Status sync() override { return {}; }
    Status close() override {
        if (closed_) return {};
        closed_ = true;
        return store_->put(key_, data_, storage::PutOptions{.if_absent = true});
    }
    const std::string& path() const override { return path_; }

  private:
    std::shared_ptr<storage::BlobStore> store_;
    std::string key_;
    std::string path_;
    Bytes data_;
    bool closed_ = false;
};

class MemoryFile final : public RandomAccessFile {
  public:
    MemoryFile(Bytes data, std::string path) : data_(std::move(data)), path_(std::move(path)) {}
    Status read_at(std::uint64_t offset, std::span<std::uint8_t> out) const override {
        if (offset > data_.size() || out.size() > data_.size() - offset)
            return fail(ErrorKind::corruption,
                        path_ + " is truncated (wanted " + std::to_string(out.size()) +
                            " bytes at offset " + std::to_string(offset) + ")");
        std::copy_n(data_.begin() + static_cast<std::ptrdiff_t>(offset), out.size(), out.begin());
        return {};
    }
    std::uint64_t size() const override { return data_.size(); }

  private:
    Bytes data_;
    std::string path_;
};

// A pack: every read_at is a ranged GET of just those bytes (restores read entries at the
// offsets the index gives, never the whole object).
class ObjectFile final : public RandomAccessFile {
  public:
    ObjectFile(std::shared_ptr<storage::BlobStore> store, std::string key, std::uint64_t size)
        : store_(std::move(store)), key_(std::move(key)), size_(size) {}
    Status read_at(std::uint64_t offset, std::span<std::uint8_t> out) const override {
        if (out.empty()) return {};
        return store_->read_at(key_, offset, out);
    }
    std::uint64_t size() const override { return size_; }

  private:
    std::shared_ptr<storage::BlobStore> store_;
    std::string key_;
    std::uint64_t size_;
};

bool starts_with_folder(std::string_view key, std::string_view folder) {
    return key.size() > folder.size() + 1 && key.starts_with(folder) && key[folder.size()] == '/';
}

// The repository's folders (and data/<2 hex>) "exist" without a request: object stores have
// no folders, and make_dir of them is a no-op (a writer asks before every pack).
bool is_layout_folder(std::string_view key) {
    for (auto folder : {format::kKeysDir, format::kDataDir, format::kIndexDir, format::kCommitsDir,
                        format::kAnnotationsDir, format::kLocksDir, format::kQuarantineDir})
        if (key == folder) return true;
    return starts_with_folder(key, format::kDataDir) && key.size() == format::kDataDir.size() + 3 &&
           key.find('/', format::kDataDir.size() + 1) == std::string_view::npos;
}

}  // namespace

bool is_object_location(const std::string& location) {
    return storage::is_s3_location(location);
}

Result<std::unique_ptr<ObjectEnv>> open_s3_env(const std::string& location,
                                               const StorageOptions& options, bool create_bucket) {
    auto where = storage::parse_s3_location(location);
    if (!where) return std::unexpected(where.error());
    std::string file = options.credentials_file;
    if (file.empty())
        if (const char* env = std::getenv("VMSHADOW_S3_CREDENTIALS"); env && *env) file = env;
    auto credentials = storage::load_s3_credentials(file);
    if (!credentials) {
        if (credentials.error().kind() == ErrorKind::not_found)
            return fail(ErrorKind::permission,
                        "no credentials for " + location +
                            ": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass "
                            "--s3-credentials FILE (or set VMSHADOW_S3_CREDENTIALS)");
        return std::unexpected(credentials.error());
    }
    storage::S3Options s3;
    s3.ca_file = options.ca_file;
    s3.virtual_hosted = options.virtual_hosted;
    s3.requests_per_second = options.max_requests_per_second;
    s3.bytes_per_second = options.max_bytes_per_second;
    s3.create_bucket = create_bucket;
    s3.log = options.log;
    auto store = storage::open_s3_blob_store(*where, *credentials, s3);
    if (!store) return std::unexpected(store.error());
    ObjectEnvOptions env_options;
    env_options.concurrency = s3.connections;
    return ObjectEnv::open(std::shared_ptr<storage::BlobStore>(std::move(*store)), env_options);
}

namespace {

// A process killed while it wrote packs leaves its spool (packs can be large): the next
// ObjectEnv on this host removes spools whose process is gone.
void remove_dead_spools(const std::string& parent) {
    std::error_code ec;
    for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        constexpr std::string_view kPrefix = "vmshadow-spool-";
        if (!name.starts_with(kPrefix)) continue;
        std::string pid = name.substr(kPrefix.size(), name.rfind('-') - kPrefix.size());
        if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
        if (pid.size() > 9 || process_running(static_cast<pid_t>(std::stol(pid)))) continue;
        std::error_code ignored;
        fs::remove_all(it->path(), ignored);
    }
}

}  // namespace

std::string default_cache_dir(const std::string& repository_id) {
    if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg == '/')
        return std::string(xdg) + "/vmshadow/" + repository_id;
    if (const char* home = std::getenv("HOME"); home && *home == '/')
        return std::string(home) + "/.cache/vmshadow/" + repository_id;
    return {};
}

ObjectEnv::ObjectEnv(std::shared_ptr<storage::BlobStore> store, std::string spool,
                     unsigned concurrency)
    : store_(std::move(store)),
      root_(store_->location()),
      spool_(std::move(spool)),
      concurrency_(std::max(1u, concurrency)) {}

Result<std::unique_ptr<ObjectEnv>> ObjectEnv::open(std::shared_ptr<storage::BlobStore> store,
                                                   const ObjectEnvOptions& options) {
    std::string parent = options.spool_parent;
    if (parent.empty()) {
        const char* tmp = std::getenv("TMPDIR");
        parent = tmp && *tmp == '/' ? tmp : "/var/tmp";
    }
    remove_dead_spools(parent);
    std::string tmpl = parent + "/vmshadow-spool-" + std::to_string(::getpid()) + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr)
        return std::unexpected(os_error("creating a spool folder in " + parent, errno));
    return std::unique_ptr<ObjectEnv>(new ObjectEnv(std::move(store), tmpl, options.concurrency));
}

ObjectEnv::~ObjectEnv() {
    std::error_code ec;
    std::filesystem::remove_all(spool_, ec);  // scratch only: what was stored is in the store
}

Status ObjectEnv::attach_cache(const std::string& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir + "/.tmp", ec);
    if (ec)
        return fail(ErrorKind::io, "cannot make the metadata cache " + dir + ": " + ec.message());
    cache_dir_ = dir;
    return {};
}

Result<ObjectEnv::Place> ObjectEnv::place(const std::string& path) const {
    Place p;
    std::string_view rest;
    if (path == root_) {
        rest = "";
    } else if (path.size() > root_.size() + 1 && path.starts_with(root_) &&
               path[root_.size()] == '/') {
        rest = std::string_view(path).substr(root_.size() + 1);
    } else {
        return fail(ErrorKind::internal, path + " is not inside the repository " + root_);
    }
    std::string_view tmp = format::kTmpDir;
    if (rest == tmp || starts_with_folder(rest, tmp)) {
        p.spooled = true;
        p.local = spool_ + std::string(rest.substr(tmp.size()));
        return p;
    }
    p.key = std::string(rest);
    return p;
}

bool ObjectEnv::cacheable(const std::string& key) const {
    if (cache_dir_.empty() || bypass_cache_.load()) return false;
    for (auto folder : {format::kIndexDir, format::kCommitsDir, format::kAnnotationsDir})
        if (starts_with_folder(key, folder) && is_hex_name(key.substr(folder.size() + 1)))
            return true;
    return false;
}

Result<Bytes> ObjectEnv::read_cached(const std::string& key) {
    std::string name = key.substr(key.rfind('/') + 1);
    std::string cached = cache_dir_ + "/" + key;
    if (local().exists(cached)) {
        auto bytes = read_file(local(), cached);
        // A copy damaged on this disk is not the repository's damage: read it again.
        if (bytes && sha256(*bytes).hex() == name) return bytes;
        (void)local().remove(cached);
    }
    auto bytes = store_->get(key);
    if (!bytes) return bytes;
    if (sha256(*bytes).hex() == name) {
        std::string folder = cache_dir_ + "/" + key.substr(0, key.rfind('/'));
        // Best effort: a cache that cannot be written only costs the next reader a GET.
        if (local().make_dir(folder))
            (void)write_file_atomic(local(), cache_dir_ + "/.tmp", folder, name, *bytes);
    }
    return bytes;
}

void ObjectEnv::drop_cached(const std::string& key) {
    if (!cache_dir_.empty()) (void)local().remove(cache_dir_ + "/" + key);
}

void ObjectEnv::prune_cache(const std::string& dir_key,
                            const std::vector<storage::BlobInfo>& objects) {
    bool cached_folder = false;
    for (auto folder : {format::kIndexDir, format::kCommitsDir, format::kAnnotationsDir})
        cached_folder |= dir_key == folder;
    if (cache_dir_.empty() || !cached_folder) return;
    auto present = local().list(cache_dir_ + "/" + dir_key);
    if (!present) return;
    // A cached copy stays only while the bucket lists its name with the same size: gone or
    // rewritten objects (repair, or damage a check should see) are read again.
    std::map<std::string, std::uint64_t> listed;
    for (const auto& o : objects) listed[o.key.substr(dir_key.size() + 1)] = o.size;
    for (const auto& name : *present) {
        std::string cached = cache_dir_ + "/" + dir_key + "/" + name;
        std::error_code ec;
        auto size = std::filesystem::file_size(cached, ec);
        auto it = listed.find(name);
        if (it == listed.end() || ec || size != it->second) (void)local().remove(cached);
    }
}

Result<std::unique_ptr<WritableFile>> ObjectEnv::create(const std::string& path) {
    auto p = place(path);
    if (!p) return std::unexpected(p.error());
    if (p->spooled) {
        auto file = local().create(p->local);
        if (!file) return std::unexpected(file.error());
        return std::make_unique<SpoolFile>(std::move(*file), path);
    }
    return std::make_unique<StoredWriter>(store_, p->key, path);
}

Result<std::unique_ptr<RandomAccessFile>> ObjectEnv::open(const std::string& path) {
    auto p = place(path);
    if (!p) return std::unexpected(p.error());
    if (p->spooled) return local().open(p->local);
    if (starts_with_folder(p->key, format::kDataDir)) {
        auto info = store_->stat(p->key);
        if (!info) return std::unexpected(info.error());
        return std::make_unique<ObjectFile>(store_, p->key, info->size);
    }
    auto bytes = cacheable(p->key) ? read_cached(p->key) : store_->get(p->key);
    if (!bytes) return std::unexpected(bytes.error());
    return std::make_unique<MemoryFile>(std::move(*bytes), path);
}

Result<std::unique_ptr<RandomAccessFile>> ObjectEnv::open_sized(const std::string& path,
                                                                std::uint64_t size) {
    auto p = place(path);
    if (!p) return std::unexpected(p.error());
    if (p->spooled || !starts_with_folder(p->key, format::kDataDir)) return open(path);
    // A missing pack shows at its first ranged read (not_found), as a HEAD would have.
    return std::make_unique<ObjectFile>(store_, p->key, size);
}

Status ObjectEnv::rename(const std::string& from, const std::string& to) {
    auto src = place(from);
    if (!src) return std::unexpected(src.error());
    auto dst = place(to);
    if (!dst) return std::unexpected(dst.error());
    if (dst->spooled) {
        if (src->spooled) return local().rename(src->local, dst->local);
        return fail(ErrorKind::internal, "moving " + from + " back into tmp/");
    }
    if (src->spooled) {
        if (auto st = store_->put_file(dst->key, src->local); !st) return st;
        drop_cached(dst->key);
        return local().remove(src->local);
    }
    // Only records move between stored names (repair's quarantine): small, read whole.
    auto bytes = store_->get(src->key);
    if (!bytes) return std::unexpected(bytes.error());
    if (auto st = store_->put(dst->key, *bytes); !st) return st;
    drop_cached(src->key);
    return store_->remove(src->key);
}

Status ObjectEnv::remove(const std::string& path) {
    auto p = place(path);
    if (!p) return std::unexpected(p.error());
    if (p->spooled) return local().remove(p->local);
    drop_cached(p->key);
    return store_->remove(p->key);
}

Status ObjectEnv::make_dir(const std::string& path) {
    auto p = place(path);
    if (!p) return std::unexpected(p.error());
    return p->spooled ? local().make_dir(p->local) : Status{};
}

Status ObjectEnv::sync_dir(const std::string& path) {
    auto p = place(path);
    if (!p) return std::unexpected(p.error());
    return {};  // a spool folder holds scratch; the store's puts are durable on success
}

Result<std::vector<std::string>> ObjectEnv::list(const std::string& dir) {
    auto p = place(dir);
    if (!p) return std::unexpected(p.error());
    if (p->spooled) return local().list(p->local);
    auto files = list_tree(dir);
    if (!files) return std::unexpected(files.error());
    std::vector<std::string> names;
    for (const auto& f : *files) {
        std::string name = f.name.substr(0, f.name.find('/'));
        // Sorted keys: the same folder's keys are adjacent.
        if (!name.empty() && (names.empty() || names.back() != name)) names.push_back(name);
    }
    return names;
}

Result<std::vector<FileInfo>> ObjectEnv::list_tree(const std::string& dir) {
    auto p = place(dir);
    if (!p) return std::unexpected(p.error());
    if (p->spooled) return local().list_tree(p->local);
    std::string prefix = p->key.empty() ? std::string() : p->key + "/";
    auto objects = store_->list(prefix);
    if (!objects) return std::unexpected(objects.error());
    std::vector<FileInfo> files;
    files.reserve(objects->size());
    for (const auto& o : *objects)
        files.push_back(FileInfo{o.key.substr(prefix.size()), o.size, o.modified});
    prune_cache(p->key, *objects);
    return files;
}

bool ObjectEnv::exists(const std::string& path) {
    auto p = place(path);
    if (!p) return false;
    if (p->spooled) return local().exists(p->local);
    if (p->key.empty() || is_layout_folder(p->key)) return true;
    return store_->stat(p->key).has_value();
}

Result<std::int64_t> ObjectEnv::modified_time(const std::string& path) {
    auto p = place(path);
    if (!p) return std::unexpected(p.error());
    if (p->spooled) return local().modified_time(p->local);
    auto info = store_->stat(p->key);
    if (!info) return std::unexpected(info.error());
    return info->modified;
}

}  // namespace vmshadow::repo
