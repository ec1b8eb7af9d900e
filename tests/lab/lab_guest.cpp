// SPDX-License-Identifier: MIT
#include "lab/lab_guest.h"

#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <utility>

#include "lab/lab_process.h"
#include "virt/libvirt_error.h"

namespace vmshadow::lab {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr std::string_view kPrefix = "vmshadow-test-";

std::string env_or(const char* name, std::string fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::string(v) : fallback;
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    std::size_t start = s.find_first_not_of(" \n\r");
    return start == std::string::npos ? std::string() : s.substr(start);
}

// Test names become part of a domain name and a kernel command line.
std::string sanitize(std::string_view text) {
    std::string out;
    for (char c : text) {
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        out += plain ? c : '_';
    }
    if (out.size() > 40) out.resize(40);
    return out.empty() ? "guest" : out;
}

std::string random_suffix() {
    std::random_device rd;
    std::uniform_int_distribution<unsigned> dist(0, 0xffffff);
    char buf[8];
    std::snprintf(buf, sizeof buf, "%06x", dist(rd));
    return buf;
}

Result<std::string> decode_base64(const std::string& text) {
    if (text.empty()) return std::string();
    std::string out(text.size() / 4 * 3 + 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(text.data()),
                            static_cast<int>(text.size()));
    if (n < 0) return fail(ErrorKind::corruption, "guest agent sent invalid base64");
    // EVP_DecodeBlock counts the padding as zero bytes.
    std::size_t len = static_cast<std::size_t>(n);
    for (auto it = text.rbegin(); it != text.rend() && *it == '='; ++it) --len;
    out.resize(len);
    return out;
}

bool process_alive(pid_t pid) {
    return kill(pid, 0) == 0 || errno == EPERM;
}

// The pid a lab guest name carries: vmshadow-test-<test>-<pid>-<random>.
std::optional<pid_t> pid_of(std::string_view name) {
    if (!name.starts_with(kPrefix)) return std::nullopt;
    std::size_t last = name.rfind('-');
    if (last == std::string_view::npos || last == 0) return std::nullopt;
    std::size_t before = name.rfind('-', last - 1);
    if (before == std::string_view::npos || before < kPrefix.size()) return std::nullopt;
    std::string digits(name.substr(before + 1, last - before - 1));
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) {
        return std::nullopt;
    }
    return static_cast<pid_t>(std::stol(digits));
}

// Destroys and undefines every domain called `name` (a test may have redefined it, or a
// restore may have left a transient one).
Status remove_domain(virConnectPtr conn, const std::string& name) {
    for (int attempt = 0; attempt < 3; ++attempt) {
        virt::DomainHandle dom(virDomainLookupByName(conn, name.c_str()));
        if (!dom) return {};
        if (virDomainIsActive(dom.get()) == 1 && virDomainDestroy(dom.get()) < 0) {
            if (virDomainIsActive(dom.get()) == 1) {
                return fail(virt::libvirt_error("lab guest '" + name + "': destroy"));
            }
        }
        if (virDomainIsPersistent(dom.get()) == 1) {
            unsigned flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                             VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                             VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | VIR_DOMAIN_UNDEFINE_NVRAM;
            if (virDomainUndefineFlags(dom.get(), flags) < 0 && virDomainUndefine(dom.get()) < 0) {
                return fail(virt::libvirt_error("lab guest '" + name + "': undefine"));
            }
        }
    }
    virt::DomainHandle dom(virDomainLookupByName(conn, name.c_str()));
    if (dom) return fail(ErrorKind::internal, "lab guest '" + name + "' keeps coming back");
    return {};
}

Status remove_dir(const fs::path& dir) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (ec) return fail(ErrorKind::io, "remove " + dir.string() + ": " + ec.message());
    return {};
}

std::string kind_arg(DataDisk::Kind kind) {
    switch (kind) {
        case DataDisk::Kind::ext4:
            return "ext4";
        case DataDisk::Kind::vfat:
            return "vfat";
        case DataDisk::Kind::blank:
            return "blank";
    }
    return "blank";
}

std::string agent_arg(AgentMode mode) {
    switch (mode) {
        case AgentMode::on:
            return "on";
        case AgentMode::off:
            return "off";
        case AgentMode::hang:
            return "hang";
    }
    return "on";
}

}  // namespace

Result<fs::path> lab_dir() {
    static std::mutex mutex;
    static std::optional<fs::path> found;
    std::lock_guard lock(mutex);
    if (found) return *found;
    std::string dir = env_or("VMSHADOW_LAB_DIR", "");
    if (dir.empty()) {
        auto out = run_checked({VMSHADOW_SOURCE_DIR "/tests/lab/build-guest.sh"});
        if (!out) return fail(out.error().with_context("build the lab guest"));
        std::string text = trim(*out);
        dir = text.substr(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
    }
    if (!fs::exists(fs::path(dir) / "root.qcow2")) {
        return fail(ErrorKind::not_found,
                    "lab guest not found in '" + dir +
                        "' (VMSHADOW_LAB_DIR must be what tests/lab/build-guest.sh prints)");
    }
    found = dir;
    return *found;
}

fs::path run_dir() {
    return env_or("VMSHADOW_LAB_RUN_DIR", "/var/tmp/vmshadow-lab-run");
}

std::string lab_uri() {
    return env_or("LIBVIRT_DEFAULT_URI", "qemu:///system");
}

Status reap_stale() {
    auto conn = virt::Connection::open(lab_uri());
    if (!conn) return fail(conn.error());
    auto domains = conn->list_domains();
    if (!domains) return fail(domains.error());
    Status result;
    auto stale = [](std::string_view name) {
        auto pid = pid_of(name);
        return pid && !process_alive(*pid);
    };
    for (const auto& d : *domains) {
        if (!stale(d.name())) continue;
        if (auto s = remove_domain(conn->raw(), d.name()); !s && result) result = s;
        if (auto s = remove_dir(run_dir() / d.name()); !s && result) result = s;
    }
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(run_dir(), ec)) {
        std::string name = entry.path().filename().string();
        if (!stale(name)) continue;
        if (auto s = remove_domain(conn->raw(), name); !s && result) result = s;
        if (auto s = remove_dir(entry.path()); !s && result) result = s;
    }
    return result;
}

Result<LabGuest> LabGuest::create(const GuestOptions& options, std::string_view test_name) {
    static std::once_flag reaped;
    std::call_once(reaped, [] { (void)reap_stale(); });

    auto lab = lab_dir();
    if (!lab) return fail(lab.error());
    auto conn = virt::Connection::open(lab_uri());
    if (!conn) return fail(conn.error());

    std::string name = std::string(kPrefix) + sanitize(test_name) + "-" + std::to_string(getpid()) +
                       "-" + random_suffix();
    fs::path dir = run_dir() / name;
    std::error_code ec;
    fs::create_directories(run_dir(), ec);
    // From here on the destructor cleans up whatever new-guest.sh or define leave behind.
    LabGuest guest(name, dir, options.root_format, std::move(*conn));

    std::vector<std::string> argv = {VMSHADOW_SOURCE_DIR "/tests/lab/new-guest.sh",
                                     "--name",
                                     name,
                                     "--dir",
                                     dir.string(),
                                     "--lab",
                                     lab->string(),
                                     "--agent",
                                     agent_arg(options.agent),
                                     "--root-format",
                                     options.root_format,
                                     "--memory",
                                     std::to_string(options.memory_mib)};
    if (!options.agent_channel) argv.push_back("--no-agent-channel");
    if (options.workload) argv.push_back("--workload");
    if (options.nic) argv.push_back("--nic");
    for (const auto& disk : options.data_disks) {
        argv.push_back("--data-disk");
        argv.push_back(kind_arg(disk.kind) + ":" + disk.size);
    }
    auto xml = run_checked(argv);
    if (!xml) return fail(xml.error().with_context("lab guest '" + name + "'"));
    auto domain = guest.conn_->define(*xml);
    if (!domain) return fail(domain.error().with_context("lab guest '" + name + "'"));
    guest.domain_.emplace(std::move(*domain));
    return guest;
}

LabGuest::LabGuest(LabGuest&& other) noexcept
    : name_(std::exchange(other.name_, {})),
      dir_(std::move(other.dir_)),
      root_format_(std::move(other.root_format_)),
      conn_(std::move(other.conn_)),
      domain_(std::move(other.domain_)) {
    other.conn_.reset();
    other.domain_.reset();
}

LabGuest& LabGuest::operator=(LabGuest&& other) noexcept {
    if (this != &other) {
        (void)remove();
        name_ = std::exchange(other.name_, {});
        dir_ = std::move(other.dir_);
        root_format_ = std::move(other.root_format_);
        conn_ = std::move(other.conn_);
        domain_ = std::move(other.domain_);
        other.conn_.reset();
        other.domain_.reset();
    }
    return *this;
}

LabGuest::~LabGuest() {
    (void)remove();
}

Status LabGuest::remove() {
    if (name_.empty()) return {};
    Status result;
    domain_.reset();
    if (conn_) {
        result = remove_domain(conn_->raw(), name_);
    } else if (auto conn = virt::Connection::open(lab_uri())) {
        result = remove_domain(conn->raw(), name_);
    }
    Status removed = remove_dir(dir_);
    if (result && !removed) result = removed;
    // Keep the name when the domain survived, so a second call (the destructor) retries.
    if (result) name_.clear();
    return result;
}

Status LabGuest::start() {
    if (virDomainCreate(domain_->raw()) < 0) {
        return fail(virt::libvirt_error("lab guest '" + name_ + "': start"));
    }
    return {};
}

std::string LabGuest::serial_output(std::size_t max_tail) const {
    std::ifstream in(serial_log(), std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() > max_tail) text = "..." + text.substr(text.size() - max_tail);
    return text;
}

fs::path LabGuest::disk_path(std::string_view target) const {
    if (target == "vda") return dir_ / ("root." + root_format_);
    return dir_ / ("data-" + std::string(target) + ".qcow2");
}

Result<std::string> LabGuest::agent_command(const std::string& command,
                                            std::chrono::seconds timeout) {
    int seconds = static_cast<int>(std::max<std::chrono::seconds::rep>(1, timeout.count()));
    // Bounds libvirt's guest-sync too, which otherwise waits 5 s whatever `seconds` says.
    // Restored afterwards: the setting is the domain's, and a test's own libvirt calls
    // (virDomainFSFreeze) must see libvirt's default, not our last command's timeout.
    (void)virDomainAgentSetResponseTimeout(domain_->raw(), seconds, 0);
    virt::CString reply(virDomainQemuAgentCommand(domain_->raw(), command.c_str(), seconds, 0));
    std::optional<Error> error;
    if (!reply) error = virt::libvirt_error("lab guest '" + name_ + "': agent " + command);
    (void)virDomainAgentSetResponseTimeout(domain_->raw(),
                                           VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_DEFAULT, 0);
    if (error) return fail(*error);
    json parsed = json::parse(reply.get(), nullptr, false);
    if (parsed.is_discarded() || !parsed.contains("return")) {
        return fail(ErrorKind::internal,
                    "lab guest '" + name_ + "': unexpected agent reply " + reply.get());
    }
    return parsed["return"].dump();
}

Status LabGuest::wait_for_agent(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    Error last(ErrorKind::timeout, "no answer yet");
    while (Clock::now() < deadline) {
        auto pong = agent_command(R"({"execute":"guest-ping"})", 2s);
        if (pong) return {};
        last = pong.error();
        // No agent channel in the domain: waiting cannot help.
        if (last.kind() == ErrorKind::unsupported) return fail(last);
        if (virDomainIsActive(domain_->raw()) != 1) {
            return fail(ErrorKind::unavailable, "lab guest '" + name_ +
                                                    "' stopped before its agent answered; "
                                                    "serial log:\n" +
                                                    serial_output());
        }
        std::this_thread::sleep_for(200ms);
    }
    return fail(ErrorKind::timeout, "lab guest '" + name_ + "': agent did not answer within " +
                                        std::to_string(timeout.count()) + " ms (" + last.message() +
                                        "); serial log:\n" + serial_output());
}

Status LabGuest::wait_for_serial(std::string_view text, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        if (serial_output(1 << 20).find(text) != std::string::npos) return {};
        if (virDomainIsActive(domain_->raw()) != 1) break;
        std::this_thread::sleep_for(100ms);
    }
    return fail(ErrorKind::timeout, "lab guest '" + name_ + "': serial log never showed '" +
                                        std::string(text) + "'; serial log:\n" + serial_output());
}

Result<std::string> LabGuest::exec(const std::string& shell_command,
                                   std::chrono::milliseconds timeout) {
    json request = {
        {"execute", "guest-exec"},
        {"arguments",
         {{"path", "/bin/sh"}, {"arg", {"-c", shell_command}}, {"capture-output", true}}}};
    auto started = agent_command(request.dump());
    if (!started) return fail(started.error());
    long long pid = json::parse(*started).value("pid", -1LL);
    std::string what = "lab guest '" + name_ + "': `" + shell_command + "`";

    auto deadline = Clock::now() + timeout;
    while (true) {
        json status_request = {{"execute", "guest-exec-status"}, {"arguments", {{"pid", pid}}}};
        auto status = agent_command(status_request.dump());
        if (!status) return fail(status.error());
        json st = json::parse(*status);
        if (st.value("exited", false)) {
            auto out = decode_base64(st.value("out-data", ""));
            auto err = decode_base64(st.value("err-data", ""));
            if (!out || !err) return fail(ErrorKind::corruption, what + ": bad output encoding");
            int code =
                st.value("exitcode", st.contains("signal") ? 128 + st.value("signal", 0) : -1);
            if (code != 0) {
                return fail(ErrorKind::internal,
                            what + " exited with " + std::to_string(code) + ": " + trim(*err));
            }
            return std::move(*out);
        }
        if (Clock::now() >= deadline) {
            return fail(ErrorKind::timeout,
                        what + " still running after " + std::to_string(timeout.count()) + " ms");
        }
        std::this_thread::sleep_for(50ms);
    }
}

Result<std::string> LabGuest::read_file(const std::string& guest_path) {
    json open_request = {{"execute", "guest-file-open"},
                         {"arguments", {{"path", guest_path}, {"mode", "r"}}}};
    auto opened = agent_command(open_request.dump());
    if (!opened) return fail(opened.error());
    long long handle = json::parse(*opened).get<long long>();

    std::string content;
    Status status;
    while (true) {
        json read_request = {{"execute", "guest-file-read"},
                             {"arguments", {{"handle", handle}, {"count", 1 << 20}}}};
        auto chunk = agent_command(read_request.dump());
        if (!chunk) {
            status = fail(chunk.error());
            break;
        }
        json r = json::parse(*chunk);
        auto data = decode_base64(r.value("buf-b64", ""));
        if (!data) {
            status = fail(data.error());
            break;
        }
        content += *data;
        if (r.value("eof", true) || r.value("count", 0) == 0) break;
    }
    json close_request = {{"execute", "guest-file-close"}, {"arguments", {{"handle", handle}}}};
    (void)agent_command(close_request.dump());
    if (!status) return fail(status.error());
    return content;
}

Result<std::int64_t> LabGuest::last_committed_row() {
    // The workload rewrites the file in place after each commit; a read between its
    // truncate and its write sees it empty, so try again.
    for (int attempt = 0; attempt < 20; ++attempt) {
        auto text = read_file("/run/lab/last-id");
        if (!text)
            return fail(text.error().with_context("last committed row (is the workload on?)"));
        std::string value = trim(*text);
        if (!value.empty()) {
            try {
                return std::stoll(value);
            } catch (const std::exception&) {
                return fail(ErrorKind::corruption,
                            "lab guest '" + name_ + "': /run/lab/last-id holds '" + value + "'");
            }
        }
        std::this_thread::sleep_for(20ms);
    }
    return fail(ErrorKind::unavailable, "lab guest '" + name_ + "': /run/lab/last-id stays empty");
}

Result<std::string> read_file_from_image(const fs::path& image, const std::string& guest_path) {
    char pattern[] = "/tmp/vmshadow-lab-image-XXXXXX";
    if (!mkdtemp(pattern)) return fail(ErrorKind::io, "mkdtemp: " + std::string(strerror(errno)));
    fs::path tmp = pattern;
    struct Cleanup {
        fs::path dir;
        ~Cleanup() {
            std::error_code ec;
            fs::remove_all(dir, ec);
        }
    } cleanup{tmp};

    // debugfs reads raw images only; -U reads an image a running QEMU holds locked.
    fs::path raw = tmp / "disk.raw";
    fs::path out = tmp / "file";
    auto converted =
        run_checked({"qemu-img", "convert", "-U", "-O", "raw", image.string(), raw.string()});
    if (!converted) return fail(converted.error());
    auto dumped =
        run_process({"debugfs", "-R", "dump " + guest_path + " " + out.string(), raw.string()});
    if (!dumped) return fail(dumped.error());
    // debugfs exits 0 even when the file is missing; it only says so on stderr.
    if (dumped->err.find("not found") != std::string::npos || !fs::exists(out)) {
        return fail(ErrorKind::not_found,
                    guest_path + " not found in " + image.string() + ": " + trim(dumped->err));
    }
    std::ifstream in(out, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Result<std::int64_t> sqlite_max_row(const fs::path& db_file) {
    sqlite3* raw = nullptr;
    std::string uri = "file:" + db_file.string() + "?immutable=1";
    int rc = sqlite3_open_v2(uri.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr);
    std::unique_ptr<sqlite3, decltype(&sqlite3_close)> db(raw, &sqlite3_close);
    if (rc != SQLITE_OK) {
        return fail(ErrorKind::io, "open " + db_file.string() + ": " + sqlite3_errstr(rc));
    }
    sqlite3_stmt* raw_stmt = nullptr;
    rc = sqlite3_prepare_v2(db.get(), "SELECT coalesce(max(id), 0) FROM rows", -1, &raw_stmt,
                            nullptr);
    std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> stmt(raw_stmt, &sqlite3_finalize);
    if (rc != SQLITE_OK || sqlite3_step(stmt.get()) != SQLITE_ROW) {
        return fail(ErrorKind::corruption,
                    "read " + db_file.string() + ": " + sqlite3_errmsg(db.get()));
    }
    return static_cast<std::int64_t>(sqlite3_column_int64(stmt.get(), 0));
}

}  // namespace vmshadow::lab
