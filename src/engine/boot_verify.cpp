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

// One point server per disk of the point, each in the throwaway's folder; the rewritten
// domain reads its disks from their sockets.
Status start_servers(repo::Repository& repo, const repo::RestorePoint& point,
                     const BootVerifyOptions& options, const BootVerifyResult& result,
                     Throwaway& vm, vmwriter::DomainRewriteSpec& spec) {
    for (const auto& d : point.disks) {
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
        nbdkit.environment = repo::storage_environment(repo.storage_options());
        nbdkit.dies_with_vmshadow = true;  // a throwaway VM's disks must not outlive us
        nbdkit.owner = "verify --boot (" + result.throwaway + "; it ends with its vmshadow)";
        auto server = exporter::start_point_server(nbdkit);
        if (!server) return std::unexpected(server.error().with_context("disk " + d.name));
        vm.servers.push_back(*server);
        spec.disks[d.name] = {"", "raw", nbdkit.socket};
    }
    return {};
}

// Boot files (kernel, initrd, NVRAM) come from the point, into the throwaway folder; one not
// stored means the host's own file is used.
Status write_boot_files(repo::Repository& repo, const repo::RestorePoint& point,
                        const virt::DomainDescription& desc, const Throwaway& vm,
                        vmwriter::DomainRewriteSpec& spec) {
    for (const auto& [role, path] : desc.boot.by_role()) {
        const repo::FileRecord* f = find_file(point, role);
        if (!f) continue;
        fs::path out = vm.dir / (role + "-" + fs::path(path).filename().string());
        if (auto st = write_point_file(repo, *f, out); !st) return st;
        spec.boot_files[role] = out.string();
    }
    return {};
}

// Why a booting VM can no longer answer, if it can't: "" while it runs.
std::string stopped_reason(const Result<virt::DomainState>& state) {
    // Transient: once it powers off, it no longer exists.
    if (!state && state.error().kind() == ErrorKind::not_found) return "it powered off";
    if (!state) return {};
    if (*state == virt::DomainState::paused) return "it paused on an I/O error of its disk";
    if (*state == virt::DomainState::shutdown || *state == virt::DomainState::shutoff)
        return "it powered off";
    if (*state != virt::DomainState::running)
        return "it stopped (" + std::string(virt::state_name(*state)) + ")";
    return {};
}

struct BootWait {
    bool answered = false;
    std::string stopped;     // why it stopped, if it did
    std::string last_error;  // the last failed ping
};

// Phase "boot": pings the throwaway's agent every second until it answers, the VM stops, or
// the deadline. A cancel ends the wait (the throwaway VM and its servers go with `vm`).
Result<BootWait> wait_for_agent(const Throwaway& vm, virt::GuestAgent& agent,
                                Clock::time_point deadline, const BootVerifyOptions& options,
                                const BootVerifyResult& result, const std::string& point) {
    BootWait wait;
    if (options.task) options.task->phase("boot", 0, 0, result.throwaway);
    while (Clock::now() < deadline) {
        if (options.task)
            if (auto st = options.task->check_cancel("boot verification of " + point); !st)
                return std::unexpected(st.error());
        wait.stopped = stopped_reason(vm.domain->state());
        if (!wait.stopped.empty()) break;
        if (auto ping = agent.ping(); ping) {
            wait.answered = true;
            break;
        } else {
            wait.last_error = ping.error().message();
        }
        std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    return wait;
}

// Why the agent did not answer, with what the guest and the servers said: the console's last
// lines, and damage the plugin found in the repository (named there with its chunk and pack).
std::string no_answer_detail(const BootWait& wait, const repo::RestorePoint& point,
                             const Throwaway& vm, Clock::time_point boot_started,
                             const BootVerifyOptions& options) {
    std::string detail;
    if (!wait.stopped.empty()) {
        auto after = std::chrono::duration<double>(Clock::now() - boot_started).count();
        detail = "the guest agent did not answer: " + wait.stopped + " " +
                 std::to_string(static_cast<int>(after + 0.5)) + " s after the start";
    } else {
        detail = "the guest agent did not answer within " +
                 std::to_string(options.timeout.count()) + " s of the start" +
                 (wait.last_error.empty() ? "" : " (" + wait.last_error + ")");
    }
    if (std::string console = serial_tail(vm.dir); !console.empty())
        detail += "; its console ended with: " + console;
    for (const auto& d : point.disks)
        if (std::string damage = corruption_line(vm.dir / (d.name + ".nbdkit.log"));
            !damage.empty())
            detail += "; disk " + d.name + ": the repository's data is damaged: " + damage;
    return detail;
}

// The guest answered: runs --exec in it, if asked, within what is left of the deadline.
void run_exec(virt::GuestAgent& agent, Clock::time_point deadline, const BootVerifyOptions& options,
              BootVerifyResult& result) {
    result.ok = true;
    result.detail = "booted; the guest agent answered";
    if (options.exec.empty()) return;
    auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline - Clock::now());
    auto ran = agent.exec(options.exec, std::max(left, std::chrono::seconds(10)));
    if (!ran) {
        result.ok = false;
        result.detail = "`" + options.exec + "` could not run: " + ran.error().message();
        return;
    }
    result.exec_exit_code = ran->exit_code;
    result.exec_output = tail(ran->out + ran->err);
    result.ok = ran->exit_code == 0;
    result.detail = "`" + options.exec + "` exited " + std::to_string(ran->exit_code);
}

// The verification's record: an annotation of the point.
Status record(repo::Repository& repo, const repo::RestorePoint& point,
              const BootVerifyOptions& options, const BootVerifyResult& result) {
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
    if (auto st = repo.annotate(point.id, "boot_verification", data); !st)
        return std::unexpected(st.error().with_context("record the verification"));
    return {};
}

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
    if (auto st = start_servers(repo, *point, options, result, vm, spec); !st)
        return std::unexpected(st.error());
    test_kill_point("verify-servers-started");
    if (auto st = write_boot_files(repo, *point, *desc, vm, spec); !st)
        return std::unexpected(st.error().with_context(label));
    auto xml = vmwriter::rewrite_domain_xml(stored_xml, spec);
    if (!xml) return std::unexpected(xml.error().with_context(label));

    auto boot_started = Clock::now();
    auto domain = virt::create_transient(connection, xml->xml);
    if (!domain) return std::unexpected(domain.error().with_context(label));
    vm.domain.emplace(std::move(*domain));
    virt::GuestAgent agent(*vm.domain, std::chrono::seconds(5));
    auto deadline = boot_started + options.timeout;
    auto wait = wait_for_agent(vm, agent, deadline, options, result, point->id.short_hex());
    if (!wait) return std::unexpected(wait.error());
    if (wait->answered) {
        result.agent_seconds = std::chrono::duration<double>(Clock::now() - boot_started).count();
        run_exec(agent, deadline, options, result);
    } else {
        result.detail = no_answer_detail(*wait, *point, vm, boot_started, options);
    }
    result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
    if (auto st = record(repo, *point, options, result); !st) return std::unexpected(st.error());
    return result;
}

}  // namespace vmshadow::engine
