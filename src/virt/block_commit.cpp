// SPDX-License-Identifier: MIT
#include "virt/block_commit.h"

#include <libvirt/libvirt.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <thread>
#include <vector>

#include "common/process.h"
#include "virt/libvirt_error.h"

namespace vmshadow::virt {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kPoll{200};
// An aborted job leaves the chain as it was within this; past it the error says so.
constexpr std::chrono::seconds kAbortGrace{60};

std::string disk_label(const Domain& domain, const std::string& target) {
    return domain.label() + ", disk " + target;
}

// The files of `target`'s running chain, the running overlay first (the live XML).
Result<std::vector<std::string>> running_chain(const Domain& domain, const std::string& target) {
    auto xml = domain.xml(XmlFlavor::live);
    if (!xml) return std::unexpected(xml.error());
    pugi::xml_document doc;
    if (!doc.load_string(xml->c_str()))
        return fail(ErrorKind::internal, domain.label() + ": libvirt's domain XML did not parse");
    for (auto disk : doc.select_nodes("/domain/devices/disk")) {
        auto node = disk.node();
        if (target != node.child("target").attribute("dev").value()) continue;
        std::vector<std::string> chain;
        for (auto layer = node; layer; layer = layer.child("backingStore")) {
            std::string file = layer.child("source").attribute("file").value();
            if (file.empty()) break;
            chain.push_back(std::move(file));
        }
        return chain;
    }
    return fail(ErrorKind::not_found, domain.label() + " has no disk " + target);
}

bool chain_holds(const std::vector<std::string>& chain, const std::string& file) {
    return std::find(chain.begin(), chain.end(), file) != chain.end();
}

Result<bool> job_running(const Domain& domain, const std::string& target,
                         virDomainBlockJobInfo& info) {
    int r = virDomainGetBlockJobInfo(domain.raw(), target.c_str(), &info, 0);
    if (r < 0) return fail(libvirt_error(disk_label(domain, target) + ": merge progress"));
    return r == 1;
}

// Aborts the disk's job (the chain stays as it was) and waits, bounded, until it is gone.
Error abort_and_explain(const Domain& domain, const std::string& target, Error why) {
    if (virDomainBlockJobAbort(domain.raw(), target.c_str(), 0) < 0) {
        Error e = libvirt_error(disk_label(domain, target) + ": abort the merge");
        return why.with_context(e.message() + "; after");
    }
    auto until = Clock::now() + kAbortGrace;
    virDomainBlockJobInfo info{};
    while (Clock::now() < until) {
        auto running = job_running(domain, target, info);
        if (!running || !*running) return why;
        std::this_thread::sleep_for(kPoll);
    }
    return Error(why.kind(), why.message() + " (the aborted merge job of " + target +
                                 " had not ended after " + std::to_string(kAbortGrace.count()) +
                                 " s: see `virsh blockjob " + domain.name() + " " + target + "`)");
}

enum class Waited { ended, ready };

// Polls the job until it ends (intermediate commit) or is ready to pivot (active commit),
// aborting it on deadline or cancel.
Result<Waited> wait_job(const Domain& domain, const std::string& target, const BlockJobWait& wait,
                        bool until_ready) {
    const auto until = Clock::now() + wait.deadline;
    auto next_report = Clock::now();
    virDomainBlockJobInfo info{};
    for (;;) {
        auto running = job_running(domain, target, info);
        if (!running) return std::unexpected(abort_and_explain(domain, target, running.error()));
        if (!*running) return Waited::ended;
        if (wait.progress && Clock::now() >= next_report) {
            wait.progress(info.cur, info.end);
            next_report = Clock::now() + std::chrono::seconds(1);
        }
        if (until_ready && info.end > 0 && info.cur == info.end) return Waited::ready;
        if (Clock::now() >= until)
            return std::unexpected(abort_and_explain(
                domain, target,
                Error(ErrorKind::timeout, disk_label(domain, target) + ": the merge ran past " +
                                              std::to_string(wait.deadline.count()) +
                                              " s and was aborted")));
        bool cancelled = wait.cancel ? wait.cancel->sleep_for(kPoll)
                                     : (std::this_thread::sleep_for(kPoll), false);
        if (cancelled)
            return std::unexpected(abort_and_explain(
                domain, target,
                Error(ErrorKind::cancelled,
                      disk_label(domain, target) + ": the merge was interrupted and aborted")));
    }
}

Result<std::string> run_qemu_img(const std::vector<std::string>& argv, const std::string& what,
                                 std::chrono::seconds timeout) {
    return with_context(run_checked(argv, timeout), what);
}

}  // namespace

Status commit_intermediate(const Domain& domain, const std::string& target, const std::string& top,
                           const std::string& base, const BlockJobWait& wait) {
    const std::string what = disk_label(domain, target) + ": commit " + top + " into " + base;
    if (virDomainBlockCommit(domain.raw(), target.c_str(), base.c_str(), top.c_str(), 0, 0) < 0)
        return fail(libvirt_error(what));
    auto waited = wait_job(domain, target, wait, false);
    if (!waited) return fail(waited.error().with_context(what));
    // The job is gone: it either completed or failed; the chain says which.
    auto chain = running_chain(domain, target);
    if (!chain) return fail(chain.error().with_context(what));
    if (chain_holds(*chain, top) || !chain_holds(*chain, base))
        return fail(ErrorKind::io, what + ": the job ended but " + top +
                                       " is still in the disk's chain (QEMU failed the commit; "
                                       "see libvirtd's log)");
    return {};
}

Status commit_active(const Domain& domain, const std::string& target, const std::string& base,
                     const BlockJobWait& wait) {
    const std::string what =
        disk_label(domain, target) + ": commit the running overlay into " + base;
    if (virDomainBlockCommit(domain.raw(), target.c_str(), base.c_str(), nullptr, 0,
                             VIR_DOMAIN_BLOCK_COMMIT_ACTIVE) < 0)
        return fail(libvirt_error(what));
    const auto until = Clock::now() + wait.deadline;
    for (;;) {
        auto waited = wait_job(domain, target, wait, true);
        if (!waited) return fail(waited.error().with_context(what));
        if (*waited == Waited::ended)
            return fail(ErrorKind::io, what +
                                           ": the job ended before it was ready (QEMU failed "
                                           "it; see libvirtd's log)");
        // Ready: the base mirrors the overlay. The pivot can still be refused while QEMU
        // finishes the switch to ready: retry until the deadline.
        if (virDomainBlockJobAbort(domain.raw(), target.c_str(),
                                   VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT) == 0)
            break;
        Error refused = libvirt_error(what + ": pivot");
        if (Clock::now() >= until) return fail(abort_and_explain(domain, target, refused));
        if (wait.cancel && wait.cancel->sleep_for(kPoll))
            return fail(abort_and_explain(
                domain, target, Error(ErrorKind::cancelled, what + ": interrupted and aborted")));
    }
    auto chain = running_chain(domain, target);
    if (!chain) return fail(chain.error().with_context(what));
    if (chain->empty() || chain->front() != base)
        return fail(ErrorKind::io, what + ": the pivot returned but the disk runs on " +
                                       (chain->empty() ? std::string("nothing") : chain->front()));
    return {};
}

Status commit_image(const std::string& image, std::chrono::seconds timeout) {
    auto done = run_qemu_img({"qemu-img", "commit", "-q", "-d", "-f", "qcow2", "--", image},
                             "commit " + image + " into its backing file", timeout);
    if (!done) return fail(done.error());
    return {};
}

Status rebase_image(const std::string& image, const std::string& new_backing,
                    std::chrono::seconds timeout) {
    std::vector<std::string> argv{"qemu-img", "rebase", "-q", "-f", "qcow2", "-b", new_backing};
    if (!new_backing.empty()) argv.insert(argv.end(), {"-F", "qcow2"});
    argv.insert(argv.end(), {"--", image});
    auto done = run_qemu_img(
        argv, "rebase " + image + " onto " + (new_backing.empty() ? "nothing" : new_backing),
        timeout);
    if (!done) return fail(done.error());
    return {};
}

Status rebase_image_header(const std::string& image, const std::string& new_backing) {
    auto done = run_qemu_img({"qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-b", new_backing,
                              "-F", "qcow2", "--", image},
                             "point " + image + " at " + new_backing, std::chrono::seconds(60));
    if (!done) return fail(done.error());
    return {};
}

Result<std::string> image_backing_file(const std::string& image) {
    auto out = run_qemu_img({"qemu-img", "info", "-U", "--output=json", "--", image},
                            "read the backing file of " + image, std::chrono::seconds(60));
    if (!out) return std::unexpected(out.error());
    auto info = nlohmann::json::parse(*out, nullptr, false);
    if (info.is_discarded() || !info.is_object())
        return fail(ErrorKind::io,
                    "read the backing file of " + image + ": qemu-img printed no JSON");
    std::string backing = info.value("full-backing-filename", "");
    if (backing.empty()) backing = info.value("backing-filename", "");
    if (backing.empty()) return backing;
    std::filesystem::path p(backing);
    if (p.is_relative()) p = std::filesystem::path(image).parent_path() / p;
    return p.lexically_normal().string();
}

}  // namespace vmshadow::virt
