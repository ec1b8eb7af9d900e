// SPDX-License-Identifier: MIT
#include "virt/guest_agent.h"

#include <libvirt/libvirt-qemu.h>
#include <openssl/evp.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "virt/libvirt_error.h"

namespace vmshadow::virt {
namespace {

// libvirt reports a missing channel and a silent agent with several codes and wordings;
// users need one message that says what to check.
// An agent that answered with an error is installed and running: the hint would mislead.
Error agent_error(const Domain& domain, const char* what) {
    Error e = libvirt_error(domain.label() + ": guest agent " + what);
    if (e.message().find("unable to execute QEMU agent command") != std::string::npos) {
        if (e.kind() == ErrorKind::internal) return Error(ErrorKind::unavailable, e.message());
        return e;
    }
    if (e.kind() == ErrorKind::unavailable || e.kind() == ErrorKind::conflict ||
        e.kind() == ErrorKind::internal) {
        return Error(ErrorKind::unavailable,
                     e.message() + " (is qemu-guest-agent installed and running in the guest?)");
    }
    return e;
}

int seconds_of(std::chrono::seconds s) {
    return static_cast<int>(s.count());
}

}  // namespace

Result<GuestAgent::TimeoutHold> GuestAgent::hold_timeout() const {
    if (virDomainAgentSetResponseTimeout(domain_.raw(), seconds_of(timeout_), 0) < 0) {
        return fail(agent_error(domain_, "set response timeout"));
    }
    return TimeoutHold(domain_.raw());
}

GuestAgent::TimeoutHold::~TimeoutHold() {
    // Back to libvirt's own default, so other tools (virsh domfsfreeze with slow hooks) see
    // the domain as they expect. Each of our calls bounds itself again first.
    if (domain_) {
        (void)virDomainAgentSetResponseTimeout(domain_, VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK, 0);
    }
}

Result<std::string> GuestAgent::command(const std::string& json_command, const char* what) const {
    auto bound = hold_timeout();
    if (!bound) return fail(bound.error());
    return command(*bound, json_command, what);
}

Result<std::string> GuestAgent::command(const TimeoutHold&, const std::string& json_command,
                                        const char* what) const {
    CString reply(
        virDomainQemuAgentCommand(domain_.raw(), json_command.c_str(), seconds_of(timeout_), 0));
    if (!reply) return fail(agent_error(domain_, what));
    return std::string(reply.get());
}

Status GuestAgent::ping() const {
    auto reply = command(R"({"execute":"guest-ping"})", "ping");
    if (!reply) return fail(reply.error());
    return {};
}

Result<std::vector<GuestFilesystem>> GuestAgent::filesystems() const {
    auto bound = hold_timeout();
    if (!bound) return fail(bound.error());
    virDomainFSInfoPtr* info = nullptr;
    int n = virDomainGetFSInfo(domain_.raw(), &info, 0);
    if (n < 0) return fail(agent_error(domain_, "filesystem info"));
    std::vector<GuestFilesystem> out;
    for (int i = 0; i < n; ++i) {
        GuestFilesystem fs;
        fs.mountpoint = info[i]->mountpoint ? info[i]->mountpoint : "";
        fs.device = info[i]->name ? info[i]->name : "";
        fs.type = info[i]->fstype ? info[i]->fstype : "";
        for (size_t d = 0; d < info[i]->ndevAlias; ++d) fs.disks.emplace_back(info[i]->devAlias[d]);
        virDomainFSInfoFree(info[i]);
        out.push_back(std::move(fs));
    }
    free(info);
    return out;
}

Result<int> GuestAgent::freeze() const {
    auto hold = hold_timeout();
    if (!hold) return fail(hold.error());
    return freeze(*hold);
}

Result<int> GuestAgent::freeze(const TimeoutHold&) const {
    int n = virDomainFSFreeze(domain_.raw(), nullptr, 0, 0);
    if (n < 0) {
        Error e = agent_error(domain_, "freeze filesystems");
        // qemu-ga: "fsfreeze hook has failed with status N": the guest said no.
        const std::string& m = e.message();
        if (auto at = m.find("hook"); at != std::string::npos) {
            auto said = m.rfind("': ", at);
            return fail(ErrorKind::cancelled,
                        domain_.label() + ": the guest's freeze hook vetoed the freeze (agent: " +
                            (said == std::string::npos ? m : m.substr(said + 3)) +
                            "); see the hook's log in the guest");
        }
        return fail(std::move(e));
    }
    return n;
}

Result<int> GuestAgent::thaw() const {
    auto hold = hold_timeout();
    if (!hold) return fail(hold.error());
    return thaw(*hold);
}

Result<int> GuestAgent::thaw(const TimeoutHold&) const {
    int n = virDomainFSThaw(domain_.raw(), nullptr, 0, 0);
    if (n < 0) return fail(agent_error(domain_, "thaw filesystems"));
    return n;
}

Result<FreezeStatus> GuestAgent::freeze_status() const {
    auto hold = hold_timeout();
    if (!hold) return fail(hold.error());
    return freeze_status(*hold);
}

Result<FreezeStatus> GuestAgent::freeze_status(const TimeoutHold& hold) const {
    auto reply = command(hold, R"({"execute":"guest-fsfreeze-status"})", "freeze status");
    if (!reply) return fail(reply.error());
    auto doc = nlohmann::json::parse(*reply, nullptr, false);
    if (doc.is_discarded() || !doc.contains("return") || !doc["return"].is_string()) {
        return fail(ErrorKind::unavailable,
                    domain_.label() + ": guest agent freeze status: unexpected reply " + *reply);
    }
    return doc["return"].get<std::string>() == "frozen" ? FreezeStatus::frozen
                                                        : FreezeStatus::thawed;
}

namespace {

// guest-exec output is base64; OpenSSL decodes it (padding bytes trimmed).
std::string base64_decode(const std::string& in) {
    if (in.empty()) return {};
    std::string out(in.size() / 4 * 3 + 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(in.data()),
                            static_cast<int>(in.size()));
    if (n < 0) return {};
    std::size_t len = static_cast<std::size_t>(n);
    for (std::size_t i = in.size(); i > 0 && in[i - 1] == '='; --i) --len;
    out.resize(len);
    return out;
}

}  // namespace

Result<GuestExecResult> GuestAgent::exec(const std::string& shell_command, Seconds limit) const {
    nlohmann::json start{
        {"execute", "guest-exec"},
        {"arguments",
         {{"path", "/bin/sh"}, {"arg", {"-c", shell_command}}, {"capture-output", true}}}};
    auto reply = command(start.dump(), "run a command");
    if (!reply) return fail(reply.error());
    auto started = nlohmann::json::parse(*reply, nullptr, false);
    if (started.is_discarded() || !started.contains("return"))
        return fail(ErrorKind::unavailable, domain_.label() + ": guest-exec gave no pid");
    if (!started["return"].is_object() || !started["return"].contains("pid") ||
        !started["return"]["pid"].is_number_integer())
        return fail(ErrorKind::unavailable, domain_.label() + ": guest-exec gave no pid");
    long long pid = started["return"]["pid"].get<long long>();
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (true) {
        nlohmann::json status{{"execute", "guest-exec-status"}, {"arguments", {{"pid", pid}}}};
        auto r = command(status.dump(), "command status");
        if (!r) return fail(r.error());
        auto j = nlohmann::json::parse(*r, nullptr, false);
        if (j.is_discarded() || !j.contains("return"))
            return fail(ErrorKind::unavailable, domain_.label() + ": bad guest-exec-status reply");
        const auto& ret = j["return"];
        // The guest writes these replies: a field of the wrong type is a bad reply, not a
        // json exception out of the virt layer.
        try {
            if (ret.value("exited", false)) {
                GuestExecResult result;
                result.exit_code = ret.contains("exitcode") ? ret["exitcode"].get<int>() : -1;
                result.out = base64_decode(ret.value("out-data", ""));
                result.err = base64_decode(ret.value("err-data", ""));
                return result;
            }
        } catch (const nlohmann::json::exception&) {
            return fail(ErrorKind::unavailable, domain_.label() + ": bad guest-exec-status reply");
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return fail(ErrorKind::timeout, domain_.label() + ": `" + shell_command +
                                                "` did not finish within " +
                                                std::to_string(limit.count()) + " s");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
}

}  // namespace vmshadow::virt
