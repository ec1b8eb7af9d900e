// SPDX-License-Identifier: MIT
#include "engine/shadow_record.h"

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "common/atomic_file.h"
#include "common/os_error.h"

namespace vmshadow::engine {
namespace fs = std::filesystem;
using json = nlohmann::json;

fs::path default_shadow_dir() {
    const char* env = std::getenv("VMSHADOW_SHADOW_DIR");
    return env && *env ? fs::path(env) : fs::path(kDefaultShadowDir);
}

std::vector<fs::path> ShadowRecord::scratch_files() const {
    std::vector<fs::path> files;
    for (const auto& d : disks) files.emplace_back(d.scratch);
    return files;
}

std::string ShadowRecord::nbd_uri(const ShadowDiskRecord& disk) const {
    return "nbd+unix:///" + disk.export_name + "?socket=" + socket;
}

namespace {

json process_json(const ProcessId& p) {
    return {{"pid", p.pid}, {"start_time", p.start_time}};
}

ProcessId process_from(const json& j) {
    if (!j.is_object()) return {};
    return {j.value("pid", -1), j.value("start_time", std::string())};
}

}  // namespace

std::string shadow_record_json(const ShadowRecord& r) {
    json j = {{"id", r.id},
              {"vm", r.vm},
              {"uuid", r.uuid},
              {"connect_uri", r.connect_uri},
              {"created", r.created},
              {"consistency", r.consistency},
              {"consistency_reason", r.consistency_reason},
              {"max_size", r.max_size},
              {"socket", r.socket},
              {"watcher", process_json(r.watcher)},
              {"state", r.state},
              {"dropped_why", r.dropped_why},
              {"dropped_at", r.dropped_at}};
    j["disks"] = json::array();
    for (const auto& d : r.disks) {
        j["disks"].push_back({{"target", d.target},
                              {"export_name", d.export_name},
                              {"size", d.size},
                              {"scratch", d.scratch}});
    }
    j["mounts"] = json::array();
    for (const auto& m : r.mounts) {
        j["mounts"].push_back({{"disk", m.disk},
                               {"link", m.link},
                               {"mount", m.mount},
                               {"nbdfuse", process_json(m.nbdfuse)}});
    }
    return j.dump(2) + "\n";
}

Result<ShadowRecord> parse_shadow_record(const std::string& text, const std::string& what) {
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return fail(ErrorKind::corruption, what + " is not a shadow record (not a JSON object)");
    try {
        ShadowRecord r;
        r.id = j.at("id").get<std::string>();
        r.vm = j.at("vm").get<std::string>();
        r.uuid = j.at("uuid").get<std::string>();
        r.connect_uri = j.value("connect_uri", std::string());
        r.created = j.value("created", std::int64_t{0});
        r.consistency = j.value("consistency", std::string());
        r.consistency_reason = j.value("consistency_reason", std::string());
        r.max_size = j.value("max_size", std::uint64_t{0});
        r.socket = j.at("socket").get<std::string>();
        r.watcher = process_from(j.value("watcher", json()));
        r.state = j.value("state", std::string("active"));
        r.dropped_why = j.value("dropped_why", std::string());
        r.dropped_at = j.value("dropped_at", std::int64_t{0});
        for (const auto& d : j.at("disks")) {
            r.disks.push_back(
                {d.at("target").get<std::string>(), d.at("export_name").get<std::string>(),
                 d.at("size").get<std::uint64_t>(), d.at("scratch").get<std::string>()});
        }
        for (const auto& m : j.value("mounts", json::array())) {
            r.mounts.push_back({m.at("disk").get<std::string>(), m.at("link").get<std::string>(),
                                m.at("mount").get<std::string>(),
                                process_from(m.value("nbdfuse", json()))});
        }
        if (!valid_shadow_id(r.id))
            return fail(ErrorKind::corruption, what + ": '" + r.id + "' is not a shadow id");
        return r;
    } catch (const json::exception& e) {
        return fail(ErrorKind::corruption, what + " is not a shadow record (" + e.what() + ")");
    }
}

fs::path shadow_record_path(const fs::path& dir, const std::string& id) {
    return dir / (id + ".json");
}

Result<ShadowRecord> load_shadow(const fs::path& dir, const std::string& id) {
    if (!valid_shadow_id(id))
        return fail(ErrorKind::invalid_argument,
                    "'" + id + "' is not a shadow id (8 hex digits; see `vmshadow shadow list`)");
    fs::path path = shadow_record_path(dir, id);
    std::ifstream in(path);
    if (!in)
        return fail(ErrorKind::not_found,
                    "no shadow copy '" + id + "' (see `vmshadow shadow list`)");
    std::stringstream text;
    text << in.rdbuf();
    return parse_shadow_record(text.str(), path.string());
}

Status save_shadow(const fs::path& dir, const ShadowRecord& record) {
    return write_file_atomically(shadow_record_path(dir, record.id), shadow_record_json(record),
                                 0600);
}

Result<std::vector<ShadowRecord>> load_shadows(const fs::path& dir, std::vector<std::string>* bad) {
    std::vector<ShadowRecord> records;
    std::error_code ec;
    if (!fs::exists(dir, ec)) return records;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
        const fs::path& p = entry.path();
        if (p.extension() != ".json" || !valid_shadow_id(p.stem().string())) continue;
        auto r = load_shadow(dir, p.stem().string());
        if (r) {
            records.push_back(std::move(*r));
        } else if (r.error().kind() != ErrorKind::not_found && bad) {
            bad->push_back(r.error().message());
        }
    }
    if (ec) return fail(os_error("list " + dir.string(), ec));
    std::sort(records.begin(), records.end(), [](const ShadowRecord& a, const ShadowRecord& b) {
        return std::tie(a.created, a.id) < std::tie(b.created, b.id);
    });
    return records;
}

Status remove_shadow_record(const fs::path& dir, const std::string& id) {
    std::error_code ec;
    fs::remove(shadow_record_path(dir, id), ec);
    if (ec) return fail(os_error("remove " + shadow_record_path(dir, id).string(), ec));
    return {};
}

bool dropped_shadow_expired(const ShadowRecord& record, std::int64_t now) {
    if (record.active()) return false;
    const std::int64_t since = record.dropped_at != 0 ? record.dropped_at : record.created;
    return now - since > kDroppedShadowKeepSeconds;
}

bool valid_shadow_id(const std::string& id) {
    return id.size() == 8 && std::all_of(id.begin(), id.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
}

std::string new_shadow_id() {
    std::random_device rd;
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(rd()));
    return buf;
}

Result<ShadowDirLock> ShadowDirLock::acquire(const fs::path& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return fail(os_error("create " + dir.string(), ec));
    fs::path path = dir / ".lock";
    ShadowDirLock lock;
    lock.fd_ = UniqueFd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock.fd_) return fail(os_error("open " + path.string(), errno));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (::flock(lock.fd_.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) return fail(os_error("lock " + path.string(), errno));
        if (std::chrono::steady_clock::now() > deadline)
            return fail(ErrorKind::locked, "another `vmshadow shadow` command has held " +
                                               path.string() + " for 60 s: retry later");
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return lock;
}

}  // namespace vmshadow::engine
