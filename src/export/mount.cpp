// SPDX-License-Identifier: MIT
#include "export/mount.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/atomic_file.h"
#include "common/os_error.h"
#include "common/process.h"
#include "common/test_hook.h"
#include "export/point_server.h"
#include "repo/crypto.h"

namespace vmshadow::exporter {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Filesystem types that hold no files we could show.
bool unmountable_type(const std::string& type) {
    return type == "swap" || type == "LVM2_member" || type == "crypto_LUKS" ||
           type == "linux_raid_member" || type == "zfs_member" || type == "bcache";
}

json process_json(const ProcessId& p) {
    return {{"pid", p.pid}, {"start_time", p.start_time}};
}

ProcessId process_from(const json& j) {
    if (!j.is_object()) return {};
    return {j.value("pid", -1), j.value("start_time", std::string())};
}

// The state of one mount, saved after every step so that umount (or the failure path)
// undoes exactly what was done.
class MountState {
  public:
    MountState(std::string state_dir) : dir_(std::move(state_dir)) {}
    std::string path(const std::string& name) const { return dir_ + "/" + name; }
    const std::string& dir() const { return dir_; }
    json& data() { return data_; }

    // Durable before the step it records runs: a mount killed at any instant leaves a state
    // that names every daemon it started.
    Status save() const {
        return write_file_atomically(path("state.json"), data_.dump(2) + "\n", 0600);
    }
    Result<bool> load() {
        std::ifstream in(path("state.json"));
        if (!in) return false;
        try {
            data_ = json::parse(in);
        } catch (const json::exception& e) {
            return fail(ErrorKind::corruption,
                        path("state.json") + " is damaged: " + std::string(e.what()));
        }
        return true;
    }
    void append(const char* key, json value) {
        if (!data_[key].is_array()) data_[key] = json::array();
        data_[key].push_back(std::move(value));
    }

  private:
    std::string dir_;
    json data_ = json::object();
};

// Mount points of this mount namespace (octal escapes of /proc/self/mountinfo decoded).
bool is_mount_point(const std::string& path) {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string id, parent, dev, root, mount;
        fields >> id >> parent >> dev >> root >> mount;
        std::string decoded;
        for (std::size_t i = 0; i < mount.size(); ++i) {
            if (mount[i] == '\\' && i + 3 < mount.size() + 0) {
                decoded.push_back(static_cast<char>(std::stoi(mount.substr(i + 1, 3), nullptr, 8)));
                i += 3;
            } else {
                decoded.push_back(mount[i]);
            }
        }
        if (decoded == path) return true;
    }
    return false;
}

struct Partition {
    std::string name;                    // "disk" or "partN"
    std::uint64_t offset = 0, size = 0;  // size 0: to the end
};

// The filesystems to try: the whole disk, or each partition of its table.
Result<std::vector<Partition>> probe(const std::string& image) {
    auto blkid = run_tool({"blkid", "-p", "-o", "export", image});
    if (!blkid) return std::unexpected(blkid.error());
    bool whole_fs =
        blkid->out.find("\nTYPE=") != std::string::npos || blkid->out.rfind("TYPE=", 0) == 0;
    bool table = blkid->out.find("PTTYPE=") != std::string::npos;
    if (whole_fs && !table) return std::vector<Partition>{{"disk", 0, 0}};
    auto sfdisk = run_tool({"sfdisk", "--json", image});
    if (!sfdisk) return std::unexpected(sfdisk.error());
    if (sfdisk->exit_code != 0 || sfdisk->out.empty()) {
        if (whole_fs) return std::vector<Partition>{{"disk", 0, 0}};
        return fail(ErrorKind::not_found, "no filesystem or partition table found");
    }
    std::vector<Partition> parts;
    try {
        json t = json::parse(sfdisk->out).at("partitiontable");
        std::uint64_t sector = t.value("sectorsize", 512);
        for (const auto& p : t.value("partitions", json::array())) {
            std::string node = p.at("node").get<std::string>();
            std::size_t digits = node.size();
            while (digits > 0 && std::isdigit(static_cast<unsigned char>(node[digits - 1])))
                --digits;
            parts.push_back({"part" + node.substr(digits),
                             p.at("start").get<std::uint64_t>() * sector,
                             p.at("size").get<std::uint64_t>() * sector});
        }
    } catch (const json::exception& e) {
        return fail(ErrorKind::internal,
                    "cannot read sfdisk --json output: " + std::string(e.what()));
    }
    if (parts.empty()) return fail(ErrorKind::not_found, "the partition table has no partitions");
    return parts;
}

// Undoes what `state` records, last step first. Stops at a busy filesystem.
Status teardown(MountState& state) {
    json& s = state.data();
    std::string image = s.value("image", std::string());
    if (s["mounts"].is_array()) {
        while (!s["mounts"].empty()) {
            std::string target = s["mounts"].back().at("path").get<std::string>();
            if (is_mount_point(target)) {
                auto r = run_tool({"umount", target});
                if (!r) return std::unexpected(r.error());
                if (r->exit_code != 0 && is_mount_point(target))
                    return fail(ErrorKind::conflict,
                                target + " is busy: a process still uses it (see `fuser -vm " +
                                    target + "`); close it and run vmshadow umount again");
            }
            s["mounts"].erase(s["mounts"].size() - 1);
            (void)state.save();
        }
    }
    if (s["dirs"].is_array())
        for (auto it = s["dirs"].rbegin(); it != s["dirs"].rend(); ++it)
            ::rmdir(it->get<std::string>().c_str());
    s["dirs"] = json::array();
    if (s["loops"].is_array()) {
        for (const auto& loop : s["loops"]) {
            std::string dev = loop.get<std::string>();
            // Only while it is still ours: a detached device may serve someone else now.
            auto back = run_tool({"losetup", "--list", "--noheadings", "-O", "BACK-FILE", dev});
            if (!back || back->exit_code != 0) continue;
            std::string file = back->out.substr(0, back->out.find_last_not_of(" \n") + 1);
            // The kernel may name a file on a FUSE mount relative to that mount.
            bool ours = file == image ||
                        (file.size() >= 9 && file.ends_with("/disk.raw") && image.ends_with(file));
            if (ours) (void)run_tool({"losetup", "-d", dev});
        }
    }
    s["loops"] = json::array();
    (void)state.save();
    std::string fuse_dir = state.path("fuse");
    if (is_mount_point(fuse_dir)) {
        auto r = run_tool({"fusermount3", "-u", fuse_dir});
        if (r && r->exit_code != 0) (void)run_tool({"fusermount3", "-u", "-z", fuse_dir});
    }
    if (auto st = stop_process(process_from(s["nbdfuse"]), std::chrono::seconds(5)); !st)
        return std::unexpected(st.error().with_context("stopping nbdfuse"));
    if (auto st = stop_process(process_from(s["nbdkit"]), std::chrono::seconds(10)); !st)
        return std::unexpected(st.error().with_context("stopping nbdkit"));
    // A mount killed before it learnt nbdkit's pid recorded the session nbdkit lives in.
    if (auto st = stop_session(process_from(s["nbdkit_session"]), std::chrono::seconds(10)); !st)
        return std::unexpected(st.error().with_context("stopping nbdkit"));
    std::error_code ec;
    fs::remove_all(state.dir(), ec);
    if (ec) return fail(os_error("cannot remove " + state.dir(), ec));
    return {};
}

// Gives a loop device to each partition and mounts those with a filesystem.
Status mount_partitions(MountState& state, const std::vector<Partition>& parts,
                        const std::string& dir, MountInfo& info) {
    const std::string image = state.data()["image"].get<std::string>();
    for (const auto& part : parts) {
        std::vector<std::string> losetup{"losetup", "--find", "--show"};
        if (part.size > 0) {
            losetup.insert(losetup.end(), {"--offset", std::to_string(part.offset), "--sizelimit",
                                           std::to_string(part.size)});
        }
        losetup.push_back(image);
        auto loop = run_checked(losetup);
        if (!loop) return std::unexpected(loop.error());
        std::string dev = loop->substr(0, loop->find('\n'));
        state.append("loops", dev);
        if (auto st = state.save(); !st) return st;
        auto type = run_tool({"blkid", "-p", "-o", "value", "-s", "TYPE", dev});
        if (!type) return std::unexpected(type.error());
        std::string t = type->out.substr(0, type->out.find('\n'));
        if (t.empty() || unmountable_type(t)) {
            info.skipped.push_back({part.name, t.empty() ? "no filesystem" : t});
            (void)run_tool({"losetup", "-d", dev});
            state.data()["loops"].erase(state.data()["loops"].size() - 1);
            continue;
        }
        std::string target = part.name == "disk" ? dir : dir + "/" + part.name;
        if (target != dir) {
            if (::mkdir(target.c_str(), 0755) != 0)
                return fail(os_error("cannot create " + target, errno));
            state.append("dirs", target);
        }
        auto mounted = run_tool({"mount", "-t", t, "-o", "ro,nosuid,nodev,noexec", dev, target});
        if (!mounted) return std::unexpected(mounted.error());
        if (mounted->exit_code != 0) {
            std::string why = mounted->err.substr(0, mounted->err.find('\n'));
            info.skipped.push_back({part.name, t + " did not mount: " + why});
            if (target != dir) {
                ::rmdir(target.c_str());
                state.data()["dirs"].erase(state.data()["dirs"].size() - 1);
            }
            (void)run_tool({"losetup", "-d", dev});
            state.data()["loops"].erase(state.data()["loops"].size() - 1);
            if (auto st = state.save(); !st) return st;
            continue;
        }
        state.append("mounts", {{"path", target}, {"name", part.name}, {"type", t}});
        if (auto st = state.save(); !st) return st;
        info.filesystems.push_back({part.name, target, t});
    }
    return {};
}

Status check_target(const std::string& dir, const std::string& run_dir) {
    std::error_code ec;
    if (!fs::exists(dir, ec)) return fail(ErrorKind::not_found, dir + " does not exist");
    if (!fs::is_directory(dir, ec))
        return fail(ErrorKind::invalid_argument, dir + " is not a directory");
    std::string state = mount_state_dir(dir, run_dir);
    if (fs::exists(state + "/state.json", ec))
        return fail(ErrorKind::conflict,
                    dir + " is already a vmshadow mount; run `vmshadow umount " + dir + "` first");
    if (is_mount_point(dir)) return fail(ErrorKind::conflict, dir + " is already a mount point");
    if (!fs::is_empty(dir, ec)) return fail(ErrorKind::invalid_argument, dir + " is not empty");
    return {};
}

Status start_servers(MountState& state, const MountRequest& r, const std::string& plugin) {
    json& s = state.data();
    PointServerOptions nbdkit;
    nbdkit.plugin = plugin;
    nbdkit.repo = r.repo;
    nbdkit.point = r.point;
    nbdkit.disk = r.disk;
    nbdkit.socket = state.path("nbd.sock");
    nbdkit.overlay = state.path("overlay");
    nbdkit.pidfile = state.path("nbdkit.pid");
    nbdkit.log = state.path("nbdkit.log");
    nbdkit.password = r.password;
    nbdkit.environment = r.environment;
    nbdkit.owner = "the mount on " + s.value("dir", std::string()) + " (`vmshadow umount " +
                   s.value("dir", std::string()) + "` ends it)";
    s["socket"] = state.path("nbd.sock");
    nbdkit.record = [&](const ProcessId& session) {
        s["nbdkit_session"] = process_json(session);
        return state.save();
    };
    auto server = start_point_server(nbdkit);
    if (!server) return std::unexpected(server.error());
    s["nbdkit"] = process_json(*server);
    if (auto st = state.save(); !st) return st;
    test_kill_point("mount-server-started");

    std::string fuse_dir = state.path("fuse");
    if (::mkdir(fuse_dir.c_str(), 0700) != 0)
        return fail(os_error("cannot create " + fuse_dir, errno));
    DaemonOptions nbdfuse;
    nbdfuse.argv = {"nbdfuse",
                    "-P",
                    state.path("nbdfuse.pid"),
                    fuse_dir + "/disk.raw",
                    "--unix",
                    state.path("nbd.sock")};
    nbdfuse.log = state.path("nbdfuse.log");
    nbdfuse.pidfile = state.path("nbdfuse.pid");
    nbdfuse.record = [&](const ProcessId& fuse) {
        s["nbdfuse"] = process_json(fuse);
        return state.save();
    };
    auto fuse = start_daemon(nbdfuse);
    if (!fuse) return std::unexpected(fuse.error());
    s["image"] = fuse_dir + "/disk.raw";
    return state.save();
}

}  // namespace

std::string mount_state_dir(const std::string& dir, const std::string& run_dir) {
    std::string path = fs::weakly_canonical(fs::absolute(dir)).string();
    auto id = repo::sha256({reinterpret_cast<const std::uint8_t*>(path.data()), path.size()});
    return run_dir + "/" + id.hex().substr(0, 16);
}

Result<MountInfo> mount_disk(const MountRequest& r) {
    std::error_code ec;
    if (auto st = check_target(r.dir, r.run_dir); !st) return std::unexpected(st.error());
    std::string dir = fs::canonical(r.dir, ec).string();
    std::string plugin = r.plugin;
    if (plugin.empty()) {
        auto found = find_plugin();
        if (!found) return std::unexpected(found.error());
        plugin = *found;
    }
    fs::create_directories(r.run_dir, ec);
    std::string state_dir = mount_state_dir(dir, r.run_dir);
    fs::remove_all(state_dir, ec);  // a leftover without state.json
    if (::mkdir(state_dir.c_str(), 0700) != 0)
        return fail(os_error("cannot create " + state_dir, errno));
    MountState state(state_dir);
    state.data() = {{"dir", dir},           {"repo", r.repo},          {"point", r.point},
                    {"disk", r.disk},       {"mounts", json::array()}, {"loops", json::array()},
                    {"dirs", json::array()}};
    MountInfo info;
    info.dir = dir;
    auto attempt = [&]() -> Status {
        if (auto st = state.save(); !st) return st;
        if (auto st = start_servers(state, r, plugin); !st) return st;
        auto parts = probe(state.data()["image"].get<std::string>());
        if (!parts) return std::unexpected(parts.error());
        if (auto st = mount_partitions(state, *parts, dir, info); !st) return st;
        if (info.filesystems.empty()) {
            std::string why;
            for (const auto& s : info.skipped)
                why += (why.empty() ? "" : ", ") + s.name + ": " + s.reason;
            return fail(ErrorKind::not_found, "no filesystem found (" + why + ")");
        }
        return {};
    };
    if (auto st = attempt(); !st) {
        (void)teardown(state);
        return std::unexpected(st.error().with_context("mount of restore point " +
                                                       r.point.substr(0, 12) + " disk " + r.disk));
    }
    return info;
}

Status unmount_disk(const std::string& dir, const std::string& run_dir) {
    MountState state(mount_state_dir(dir, run_dir));
    auto found = state.load();
    if (!found) return std::unexpected(found.error());
    if (!*found) return fail(ErrorKind::not_found, dir + " is not a vmshadow mount");
    return teardown(state);
}

}  // namespace vmshadow::exporter
