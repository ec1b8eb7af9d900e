// SPDX-License-Identifier: MIT
#include "export/point_server.h"

#include <cstdlib>
#include <filesystem>

namespace vmshadow::exporter {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPluginName = "nbdkit-vmshadow-plugin.so";

// "ERROR MESSAGE [kind]" as the plugin logs it, back into an Error.
Error daemon_error(const Error& start_error, const std::string& log) {
    std::string line = last_line_in_file(log);
    auto open = line.rfind(" [");
    if (open == std::string::npos || line.back() != ']') return start_error;
    std::string kind_text = line.substr(open + 2, line.size() - open - 3);
    std::string message = line.substr(0, open);
    if (auto e = message.find("error: "); e != std::string::npos) message = message.substr(e + 7);
    for (int k = 0; k <= static_cast<int>(ErrorKind::cancelled); ++k) {
        auto kind = static_cast<ErrorKind>(k);
        if (kind_name(kind) == kind_text) return Error(kind, message);
    }
    return start_error;
}

}  // namespace

Result<std::string> find_plugin() {
    if (const char* env = std::getenv("VMSHADOW_NBDKIT_PLUGIN"); env && *env) {
        if (!fs::exists(env))
            return fail(ErrorKind::not_found,
                        std::string("VMSHADOW_NBDKIT_PLUGIN: ") + env + " does not exist");
        return std::string(env);
    }
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    std::vector<fs::path> candidates;
    if (!ec) {
        candidates.push_back(exe.parent_path() / ".." / "export" / kPluginName);
        candidates.push_back(exe.parent_path() / ".." / "lib" / "vmshadow" / kPluginName);
    }
    candidates.push_back(fs::path("/usr/lib/vmshadow") / kPluginName);
    for (const auto& c : candidates)
        if (fs::exists(c, ec)) return fs::weakly_canonical(c).string();
    return fail(ErrorKind::not_found, std::string(kPluginName) +
                                          " not found beside vmshadow; set VMSHADOW_NBDKIT_PLUGIN");
}

Result<ProcessId> start_point_server(const PointServerOptions& o) {
    std::string plugin = o.plugin;
    if (plugin.empty()) {
        auto found = find_plugin();
        if (!found) return std::unexpected(found.error());
        plugin = *found;
    }
    // nbdkit refuses to bind over an existing socket; one left by a dead server is stale.
    std::error_code ec;
    fs::remove(o.socket, ec);
    fs::remove(o.pidfile, ec);
    DaemonOptions nbdkit;
    // In the foreground nbdkit sets PR_SET_PDEATHSIG itself and dies with vmshadow; a server
    // that outlives it forks into the background, inside the session recorded before it ran.
    // --log=stderr keeps its errors in our log.
    nbdkit.argv = {"nbdkit", "--log=stderr"};
    if (o.dies_with_vmshadow) nbdkit.argv.push_back("--exit-with-parent");
    for (const std::string& a : {std::string("-U"), o.socket, std::string("-P"), o.pidfile, plugin,
                                 "repo=" + o.repo, "point=" + o.point, "disk=" + o.disk})
        nbdkit.argv.push_back(a);
    if (!o.overlay.empty()) nbdkit.argv.push_back("overlay=" + o.overlay);
    if (!o.owner.empty()) nbdkit.argv.push_back("owner=" + o.owner);
    nbdkit.env = o.environment;
    if (!o.password.empty()) nbdkit.env.push_back("VMSHADOW_PASSWORD=" + o.password);
    nbdkit.log = o.log;
    nbdkit.pidfile = o.pidfile;
    nbdkit.dies_with_parent = o.dies_with_vmshadow;
    nbdkit.forks = !o.dies_with_vmshadow;
    nbdkit.record = o.record;
    auto server = start_daemon(nbdkit);
    if (!server) return fail(daemon_error(server.error(), nbdkit.log));
    return server;
}

}  // namespace vmshadow::exporter
