// SPDX-License-Identifier: MIT
#include "engine/boot_verify.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "common/os_error.h"
#include "common/process.h"
#include "common/test_hook.h"
#include "engine/vm_point.h"
#include "export/point_server.h"
#include "repo/lock.h"
#include "repo/restore.h"
#include "virt/domain_xml.h"
#include "virt/guest_agent.h"
#include "virt/lifecycle.h"
#include "vmwriter/domain_rewrite.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string random_hex(int n) {
    std::random_device rd;
    std::string out;
    const char* digits = "0123456789abcdef";
    for (int i = 0; i < n; ++i) out += digits[rd() % 16];
    return out;
}

std::string tail(const std::string& text, std::size_t n = 2000) {
    return text.size() <= n ? text : text.substr(text.size() - n);
}

// The last `lines` non-empty lines of the throwaway's console log (the one .log file in its
// folder that is not an nbdkit log), joined with " | ".
std::string serial_tail(const fs::path& dir, std::size_t lines = 3) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        std::string name = e.path().filename().string();
        if (e.path().extension() != ".log" || name.ends_with(".nbdkit.log")) continue;
        std::ifstream in(e.path());
        std::vector<std::string> last;
        for (std::string line; std::getline(in, line);) {
            while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
            if (line.empty()) continue;
            last.push_back(line);
            if (last.size() > lines) last.erase(last.begin());
        }
        std::string out;
        for (const auto& l : last) out += (out.empty() ? "" : " | ") + l;
        return out;
    }
    return {};
}

// The first line of an nbdkit log where the plugin reported damaged data ("… [corruption]").
std::string corruption_line(const fs::path& log) {
    std::ifstream in(log);
    for (std::string line; std::getline(in, line);)
        if (line.find("[corruption]") != std::string::npos) {
            if (auto e = line.find("error: "); e != std::string::npos) line = line.substr(e + 7);
            return line;
        }
    return {};
}

// Everything a verification starts, undone in reverse whatever happens.
struct Throwaway {
    std::optional<virt::Domain> domain;
    std::vector<ProcessId> servers;
    fs::path dir;
    ~Throwaway() {
        if (domain) (void)virt::destroy_domain(*domain);  // transient: gone once stopped
        for (auto it = servers.rbegin(); it != servers.rend(); ++it)
            (void)stop_process(*it, std::chrono::seconds(10));
        std::error_code ec;
        if (!dir.empty()) fs::remove_all(dir, ec);
    }
};

}  // namespace

Result<BootVerifyResult> verify_boot(repo::Repository& repo, const virt::Connection& connection,
                                     const BootVerifyOptions& options) {
    auto started = Clock::now();
    BootVerifyResult result;
    auto opened = open_vm_point(repo, options.point, "verify", "there is nothing to boot");
    if (!opened) return std::unexpected(opened.error());
    const repo::RestorePoint* point = &opened->point;
    const std::string& label = opened->label;
    result.point = point->id.hex();
    result.vm = point->vm;
    const repo::FileRecord* xml_record = find_file(*point, "domain_xml");
    if (!xml_record) return fail(ErrorKind::corruption, label + " lacks its domain XML");
    auto xml_text = read_text(repo, *xml_record);
    if (!xml_text) return std::unexpected(xml_text.error().with_context(label));
    const std::string& stored_xml = *xml_text;
    auto desc = virt::parse_domain_xml(stored_xml);
    if (!desc) return std::unexpected(desc.error().with_context(label));
    if (!desc->agent_channel) {
        return fail(ErrorKind::unsupported,
                    label + ": VM '" + point->vm +
                        "' has no guest agent channel, so a boot cannot be confirmed: add an "
                        "org.qemu.guest_agent.0 channel to it");
    }
    Throwaway vm;
    result.throwaway = "vmshadow-verify-" + point->id.hex().substr(0, 8) + "-" + random_hex(6);
    vm.dir = fs::path(options.work_dir) / result.throwaway;
    std::error_code ec;
    fs::create_directories(vm.dir, ec);
    if (ec) return fail(os_error("create " + vm.dir.string(), ec));

    vmwriter::DomainRewriteSpec spec;
    spec.new_name = result.throwaway;
    spec.log_dir = vm.dir.string();
    spec.remove_nics = true;
    for (const auto& d : point->disks) {
        std::string base = (vm.dir / d.name).string();
        exporter::PointServerOptions nbdkit;
        nbdkit.plugin = options.plugin;
        nbdkit.repo = repo.root();
        nbdkit.point = result.point;
        nbdkit.disk = d.name;
        nbdkit.socket = base + ".sock";
        nbdkit.overlay = base + ".overlay";
        nbdkit.pidfile = base + ".pid";
        nbdkit.log = base + ".nbdkit.log";
        nbdkit.password = options.password;
        nbdkit.dies_with_vmshadow = true;  // a throwaway VM's disks must not outlive us
        nbdkit.owner = "verify --boot (" + result.throwaway + "; it ends with its vmshadow)";
        auto server = exporter::start_point_server(nbdkit);
        if (!server) return std::unexpected(server.error().with_context("disk " + d.name));
        vm.servers.push_back(*server);
        spec.disks[d.name] = {"", "raw", nbdkit.socket};
    }
    test_kill_point("verify-servers-started");
    // Boot files (kernel, initrd, NVRAM) come from the point, into the throwaway folder.
    for (const auto& [role, path] : desc->boot.by_role()) {
        const repo::FileRecord* f = find_file(*point, role);
        if (!f) continue;  // not stored: the host's own file is used
        fs::path out = vm.dir / (role + "-" + fs::path(path).filename().string());
        if (auto st = write_point_file(repo, *f, out); !st)
            return std::unexpected(st.error().with_context(label));
        spec.boot_files[role] = out.string();
    }
    auto xml = vmwriter::rewrite_domain_xml(stored_xml, spec);
    if (!xml) return std::unexpected(xml.error().with_context(label));

    auto boot_started = Clock::now();
    auto domain = virt::create_transient(connection, xml->xml);
    if (!domain) return std::unexpected(domain.error().with_context(label));
    vm.domain.emplace(std::move(*domain));

    virt::GuestAgent agent(*vm.domain, std::chrono::seconds(5));
    auto deadline = boot_started + options.timeout;
    bool answered = false;
    std::string last_error, stopped;
    if (options.task) options.task->phase("boot", 0, 0, result.throwaway);
    while (Clock::now() < deadline) {
        // The throwaway VM and its servers go with `vm` on the way out.
        if (options.task)
            if (auto st =
                    options.task->check_cancel("boot verification of " + point->id.short_hex());
                !st)
                return std::unexpected(st.error());
        auto state = vm.domain->state();
        // Transient: once it powers off, it no longer exists.
        if (!state && state.error().kind() == ErrorKind::not_found) {
            stopped = "it powered off";
            break;
        }
        if (state && *state == virt::DomainState::paused) {
            stopped = "it paused on an I/O error of its disk";
            break;
        }
        if (state &&
            (*state == virt::DomainState::shutdown || *state == virt::DomainState::shutoff)) {
            stopped = "it powered off";
            break;
        }
        if (state && *state != virt::DomainState::running) {
            stopped = "it stopped (" + std::string(virt::state_name(*state)) + ")";
            break;
        }
        if (auto ping = agent.ping(); ping) {
            answered = true;
            break;
        } else {
            last_error = ping.error().message();
        }
        std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    if (!answered && !stopped.empty()) {
        auto after = std::chrono::duration<double>(Clock::now() - boot_started).count();
        result.detail = "the guest agent did not answer: " + stopped + " " +
                        std::to_string(static_cast<int>(after + 0.5)) + " s after the start";
    } else if (!answered) {
        result.detail = "the guest agent did not answer within " +
                        std::to_string(options.timeout.count()) + " s of the start" +
                        (last_error.empty() ? "" : " (" + last_error + ")");
    }
    if (!answered) {
        // What the guest and the servers said: the console's last lines, and damage the
        // plugin found in the repository (named there with its chunk and pack).
        if (std::string console = serial_tail(vm.dir); !console.empty())
            result.detail += "; its console ended with: " + console;
        for (const auto& d : point->disks)
            if (std::string damage = corruption_line(vm.dir / (d.name + ".nbdkit.log"));
                !damage.empty())
                result.detail +=
                    "; disk " + d.name + ": the repository's data is damaged: " + damage;
    } else {
        result.agent_seconds = std::chrono::duration<double>(Clock::now() - boot_started).count();
        result.ok = true;
        result.detail = "booted; the guest agent answered";
        if (!options.exec.empty()) {
            auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline - Clock::now());
            auto ran = agent.exec(options.exec, std::max(left, std::chrono::seconds(10)));
            if (!ran) {
                result.ok = false;
                result.detail = "`" + options.exec + "` could not run: " + ran.error().message();
            } else {
                result.exec_exit_code = ran->exit_code;
                result.exec_output = tail(ran->out + ran->err);
                result.ok = ran->exit_code == 0;
                result.detail = "`" + options.exec + "` exited " + std::to_string(ran->exit_code);
            }
        }
    }
    result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
    nlohmann::json data{{"ok", result.ok},
                        {"detail", result.detail},
                        {"throwaway_vm", result.throwaway},
                        {"seconds", result.seconds}};
    if (result.agent_seconds) data["agent_seconds"] = *result.agent_seconds;
    if (!options.exec.empty()) {
        data["exec"] = options.exec;
        data["exec_exit_code"] =
            result.exec_exit_code ? nlohmann::json(*result.exec_exit_code) : nlohmann::json();
        data["exec_output"] = result.exec_output;
    }
    if (auto st = repo.annotate(point->id, "boot_verification", data); !st)
        return std::unexpected(st.error().with_context("record the verification"));
    return result;
}

}  // namespace vmshadow::engine
