// SPDX-License-Identifier: MIT
#pragma once
// The replica integration tests' fixture (issue 20): two independent libvirt hosts on this
// machine — host A, the system libvirtd (qemu:///system), and host B, a second libvirtd made
// by tests/lab/second-host.sh — each with its own real vmshadowd:
//   - a CA and two host certificates made with `vmshadow cert` (CN=hosta for 127.0.0.1,
//     CN=hostb for 127.0.0.2);
//   - daemon A: libvirt host A, replica listener 127.0.0.1:<free port>, allows CN=hostb (the
//     reverse direction) into <dir>/store-a;
//   - daemon B: libvirt host B, replica listener 127.0.0.2:<free port>, allows CN=hosta into
//     <dir>/store-b;
//   - a lab guest on host A (vda 256 MiB + a blank 64 MiB vdb) with the SQLite workload
//     writing all the time.
// Host B is brought up once per suite by the ctest fixture (replica.hostb_up/_down in
// tests/CMakeLists.txt: VMSHADOW_HOSTB_DIR); a test program run by hand brings it up itself
// and takes it down at exit when it was not up before.
// Everything a test makes is removed even when it fails: both daemons stopped, every domain
// on host B whose name starts with the guest's name destroyed and undefined, the guest on
// host A removed, the test directory deleted.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include "integration/daemon_fixture.h"

namespace vmshadow::testing {

// Host B: its URI; up for the whole test program.
class SecondHost : public ::testing::Environment {
  public:
    static std::string script() { return VMSHADOW_SOURCE_DIR "/tests/lab/second-host.sh"; }
    static std::vector<std::string> env_args() {
        const char* dir = std::getenv("VMSHADOW_HOSTB_DIR");
        return {"env", "HOSTB=" + std::string(dir && *dir ? dir : "/run/vmshadow-hostb")};
    }
    static lab::ProcessOutput run(const std::string& action) {
        auto argv = env_args();
        argv.insert(argv.end(), {"bash", script(), action});
        auto r = lab::run_process(argv);
        return r ? *r : lab::ProcessOutput{-1, "", r.error().message()};
    }
    // Brings host B up when it is not (the ctest fixture normally did) and returns its URI.
    static const std::string& uri() {
        static std::string cached;
        if (!cached.empty()) return cached;
        bool was_up = run("status").exit_code == 0;
        auto up = run("up");
        if (up.exit_code != 0) throw std::runtime_error("second-host.sh up: " + up.err + up.out);
        std::string out = up.out;
        while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
        cached = out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
        if (!was_up) ::testing::AddGlobalTestEnvironment(new TearDownHostB);
        return cached;
    }

  private:
    struct TearDownHostB : ::testing::Environment {
        void TearDown() override { (void)run("down"); }
    };
};

// A port free on `address` now (bound, read, closed): the daemon binds it a moment later.
inline std::uint16_t free_port(const char* address) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, address, &a.sin_addr);
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        if (fd >= 0) ::close(fd);
        throw std::runtime_error(std::string("no free port on ") + address);
    }
    ::close(fd);
    return ntohs(a.sin_port);
}

inline std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
    return s;
}

// One host's side: its libvirt, its daemon, its certificate and its replica listener.
struct ReplicaSide {
    std::string name;  // "hosta"
    std::string uri;   // libvirt
    std::string address;
    std::uint16_t replica_port = 0;
    fs::path cert_dir, storage;
    std::unique_ptr<DaemonProcess> daemon;

    std::string endpoint() const { return address + ":" + std::to_string(replica_port); }
    std::string daemon_url() const { return "unix:" + daemon->socket.string(); }

    // [daemon] + [replica]: its certificate, the CA, its listener, who may replicate here.
    void write_config(const fs::path& scratch, const std::string& allowed_subject,
                      const std::string& ca_file = "") const {
        fs::create_directories(scratch);
        fs::create_directories(storage);
        std::ofstream out(daemon->config_file);
        out << "[daemon]\nlisten = \"127.0.0.1:0\"\nscratch-dir = \"" << scratch.string()
            << "\"\nconnect-uri = \"" << uri << "\"\n\n[replica]\ncertificate = \""
            << (cert_dir / "host.crt").string() << "\"\nkey = \""
            << (cert_dir / "host.key").string() << "\"\nca = \""
            << (ca_file.empty() ? (cert_dir / "ca.crt").string() : ca_file) << "\"\nlisten = \""
            << endpoint() << "\"\nendpoint = \"" << endpoint()
            << "\"\n\n[[replica.allow]]\nsubject = \"" << allowed_subject << "\"\nstorage = \""
            << storage.string() << "\"\n";
    }

    // `vmshadow --daemon unix:SOCKET ARGS...`
    lab::ProcessOutput cli(std::vector<std::string> args) const {
        args.insert(args.begin(), {"--daemon", daemon_url()});
        return run_vmshadow(args);
    }
    // A CLI command that must succeed; its stdout.
    std::string cli_ok(const std::vector<std::string>& args) const {
        auto r = cli(args);
        if (r.exit_code != 0) {
            std::string cmd;
            for (const auto& a : args) cmd += " " + a;
            throw std::runtime_error(name + ": vmshadow" + cmd + " exited " +
                                     std::to_string(r.exit_code) + ": " + r.err + r.out +
                                     "\n--- daemon log tail:\n" + log_tail());
        }
        return r.out;
    }
    std::string log_tail(std::size_t n = 3000) const {
        std::string log = daemon->read_log();
        return log.size() > n ? log.substr(log.size() - n) : log;
    }

    // This host's entry for `vm` in GET /replicas (role primary|replica); null when none.
    json replica_entry(const std::string& vm, const std::string& role) const {
        auto all = daemon->api_json("GET", "/replicas");
        for (const auto& r : all.value("replicas", json::array()))
            if (r.value("vm", "") == vm && r.value("role", "") == role) return r;
        return nullptr;
    }
    // GET /replicas/{vm}/points: [{"seq", "token", "time", "consistency"}]
    json points(const std::string& vm) const {
        return daemon->api_json("GET", "/replicas/" + vm + "/points").value("points", json());
    }

    lab::ProcessOutput virsh(std::vector<std::string> args) const {
        args.insert(args.begin(), {"virsh", "-q", "-c", uri});
        auto r = lab::run_process(args);
        return r ? *r : lab::ProcessOutput{-1, "", r.error().message()};
    }
    bool domain_exists(const std::string& vm) const {
        return virsh({"domstate", vm}).exit_code == 0;
    }
    std::string domain_state(const std::string& vm) const {
        return trimmed(virsh({"domstate", vm}).out);
    }
    // Pings the guest agent of `vm` on this host until it answers.
    bool agent_answers(const std::string& vm, std::chrono::seconds limit) const {
        for (auto end = std::chrono::steady_clock::now() + limit;
             std::chrono::steady_clock::now() < end;
             std::this_thread::sleep_for(std::chrono::seconds(1)))
            if (virsh({"qemu-agent-command", vm, R"({"execute":"guest-ping"})", "--timeout", "5"})
                    .exit_code == 0)
                return true;
        return false;
    }
    // Host file of each disk of `vm` (target → source), as this host's libvirt has it.
    std::map<std::string, fs::path> disk_files(const std::string& vm) const {
        std::map<std::string, fs::path> out;
        auto r = virsh({"domblklist", vm, "--details"});
        std::istringstream lines(r.out);
        std::string type, device, target, source;
        while (lines >> type >> device >> target >> source)
            if (device == "disk") out[target] = source;
        return out;
    }
    // Names of the domain's checkpoints.
    std::vector<std::string> checkpoints(const std::string& vm) const {
        std::vector<std::string> names;
        std::istringstream lines(virsh({"checkpoint-list", vm, "--name"}).out);
        for (std::string line; std::getline(lines, line);)
            if (!line.empty()) names.push_back(line);
        return names;
    }
    // Removes every domain whose name starts with `prefix` (failover and test copies).
    void remove_domains(const std::string& prefix) const {
        auto list = virsh({"list", "--all", "--name"});
        std::istringstream names(list.out);
        for (std::string vm; std::getline(names, vm);) {
            if (vm.rfind(prefix, 0) != 0) continue;
            (void)virsh({"destroy", vm});
            (void)virsh({"undefine", vm, "--checkpoints-metadata", "--snapshots-metadata",
                         "--managed-save", "--nvram"});
        }
    }
};

class ReplicaTest : public ::testing::Test {
  protected:
    static constexpr std::uint64_t kDiskBytes = (256u << 20) + (64u << 20);  // vda + vdb

    void SetUp() override {
        hostb_uri = SecondHost::uri();
        fs::create_directories(lab::run_dir());
        std::string tmpl = (lab::run_dir() / "replica-test-XXXXXX").string();
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
        dir = tmpl;
        make_certificates();
        a = make_side("hosta", lab::lab_uri(), "127.0.0.1");
        b = make_side("hostb", hostb_uri, "127.0.0.2");
        a.write_config(dir / "scratch-a", "CN=hostb");
        b.write_config(dir / "scratch-b", "CN=hosta");
    }

    void TearDown() override {
        // Daemons first (no cycle or failover runs on), then host B's copies, then the guest.
        if (a.daemon) a.daemon->stop_daemon();
        if (b.daemon) b.daemon->stop_daemon();
        for (const auto& g : guests) b.remove_domains(g.name());
        guests.clear();
        std::error_code ec;
        if (!::testing::Test::HasFailure() || !std::getenv("VMSHADOW_KEEP_FAILED"))
            fs::remove_all(dir, ec);
    }

    void make_certificates() {
        ca = dir / "ca";
        auto made = run_vmshadow({"cert", "ca", ca.string(), "--name", "replica test CA"});
        ASSERT_EQ(made.exit_code, 0) << made.err << made.out;
        for (auto [host, ip] : {std::pair{"hosta", "127.0.0.1"}, std::pair{"hostb", "127.0.0.2"}}) {
            auto issued = run_vmshadow({"cert", "issue", "--ca", ca.string(), "--name", host,
                                        "--ip", ip, (dir / host).string()});
            ASSERT_EQ(issued.exit_code, 0) << issued.err << issued.out;
        }
    }

    ReplicaSide make_side(const std::string& name, const std::string& uri,
                          const std::string& address) {
        ReplicaSide s;
        s.name = name;
        s.uri = uri;
        s.address = address;
        s.replica_port = free_port(address.c_str());
        s.cert_dir = dir / name;
        s.storage = dir / ("store-" + name.substr(4));
        s.daemon = std::make_unique<DaemonProcess>(dir / ("daemon-" + name.substr(4)));
        fs::create_directories(s.daemon->home);
        return s;
    }

    void start_both() {
        a.daemon->start_daemon();
        b.daemon->start_daemon();
    }

    // The replicated guest on host A: workload on, a blank vdb for exact writes.
    lab::LabGuest& boot_guest() {
        lab::GuestOptions options{.workload = true,
                                  .data_disks = {{lab::DataDisk::Kind::blank, "64M"}}};
        auto guest = lab::LabGuest::create(options, current_test_name());
        if (!guest) throw std::runtime_error("create: " + guest.error().message());
        guests.push_back(std::move(*guest));
        lab::LabGuest& g = guests.back();
        if (auto s = g.start(); !s) throw std::runtime_error(s.error().message());
        if (auto s = g.wait_for_agent(); !s) throw std::runtime_error(s.error().message());
        return g;
    }

    // enable VM --to B --interval 5m (the scheduler's initial copy starts at once; later
    // cycles are the test's own `replica cycle --wait`, so what each sends is known), then
    // a cycle, waited for: the bytes sent since enable (the initial copy's, mostly).
    std::uint64_t enable_and_copy(const std::string& vm,
                                  const std::vector<std::string>& extra = {}) {
        std::vector<std::string> args{"replica",    "enable",     vm,  "--to",
                                      b.endpoint(), "--interval", "5m"};
        args.insert(args.end(), extra.begin(), extra.end());
        a.cli_ok(args);
        cycle(a, vm);
        return a.replica_entry(vm, "primary").value("bytes_sent", 0ull);
    }

    // `replica cycle VM --wait` on `side` (the primary), again while a scheduled cycle of the
    // VM holds it (conflict, exit 6); the bytes it sent (the link's bytes_sent before and
    // after, so a scheduled cycle that ran meanwhile counts too).
    std::uint64_t cycle(const ReplicaSide& side, const std::string& vm) {
        auto before = side.replica_entry(vm, "primary");
        std::uint64_t sent_before = before.is_null() ? 0 : before.value("bytes_sent", 0ull);
        for (int attempt = 0;; ++attempt) {
            auto r = side.cli({"replica", "cycle", vm, "--wait"});
            if (r.exit_code == 0) break;
            if (r.exit_code != 6 || attempt == 40)
                throw std::runtime_error(side.name + ": replica cycle " + vm + " exited " +
                                         std::to_string(r.exit_code) + ": " + r.err + r.out +
                                         "\n--- daemon log tail:\n" + side.log_tail());
            std::this_thread::sleep_for(std::chrono::seconds(3));
        }
        auto after = side.replica_entry(vm, "primary");
        if (after.is_null()) throw std::runtime_error(side.name + " has no link for " + vm);
        return after.value("bytes_sent", 0ull) - sent_before;
    }

    // The latest recovery point's seq on host B (throws when there is none).
    std::uint64_t latest_seq(const ReplicaSide& side, const std::string& vm) {
        auto p = side.points(vm);
        if (!p.is_array() || p.empty()) throw std::runtime_error(vm + ": no recovery point");
        return p.back().at("seq").get<std::uint64_t>();
    }

    // The store folder of `vm` under a side's storage (<vm>-<uuid8>).
    static fs::path store_folder(const ReplicaSide& side, const std::string& vm) {
        for (const auto& e : fs::directory_iterator(side.storage))
            if (e.is_directory() && e.path().filename().string().rfind(vm + "-", 0) == 0)
                return e.path();
        throw std::runtime_error("no store of " + vm + " under " + side.storage.string());
    }
    // The layer of point `seq` for disk `target` (its backing chain is the point's content).
    static fs::path point_layer(const ReplicaSide& side, const std::string& vm, std::uint64_t seq,
                                const std::string& target) {
        return store_folder(side, vm) / ("p" + std::to_string(seq) + "-" + target + ".qcow2");
    }

    // Whether two images (any format, backing chains followed, read while in use) hold the
    // same bytes: `qemu-img compare -U`; the message says where they differ.
    static ::testing::AssertionResult same_content(const fs::path& x, const fs::path& y) {
        auto r = lab::run_process({"qemu-img", "compare", "-U", x.string(), y.string()});
        if (r && r->exit_code == 0) return ::testing::AssertionSuccess();
        return ::testing::AssertionFailure()
               << x << " and " << y << " differ: " << (r ? r->out + r->err : r.error().message());
    }
    // SHA-256 of an image's guest-visible bytes (raw), for messages and the bench.
    std::string disk_sha256(const fs::path& image) {
        fs::path raw = dir / "hash.raw";
        auto conv =
            lab::run_process({"qemu-img", "convert", "-U", "-O", "raw", image.string(), raw});
        std::string out = "unreadable: " + image.string();  // never equal to another
        if (conv && conv->exit_code == 0) {
            auto sum = lab::run_process({"sha256sum", raw.string()});
            if (sum && sum->exit_code == 0) out = sum->out.substr(0, 64);
        }
        std::error_code ec;
        fs::remove(raw, ec);
        return out;
    }
    // A copy of an image as it is now (-U: the guest should be suspended or off).
    fs::path capture(const fs::path& image, const std::string& as) {
        fs::path out = dir / as;
        auto r = lab::run_checked(
            {"qemu-img", "convert", "-U", "-O", "qcow2", image.string(), out.string()});
        if (!r) throw std::runtime_error("capture " + image.string() + ": " + r.error().message());
        return out;
    }

    // ~`bytes` of random 64 KiB blocks written straight to the guest's blank vdb, spread
    // over the disk, then synced: a known amount of changed data.
    static void write_random_blocks(lab::LabGuest& g, std::uint64_t bytes, int stride = 19) {
        std::uint64_t blocks = bytes / 65536;
        std::string cmd = "i=0; while [ $i -lt " + std::to_string(blocks) +
                          " ]; do dd if=/dev/urandom of=/dev/vdb bs=65536 count=1 seek=$(((i * " +
                          std::to_string(stride) + ") % 1024)) conv=notrunc 2>/dev/null; " +
                          "i=$((i + 1)); done; sync";
        auto r = g.exec(cmd, std::chrono::seconds(120));
        if (!r) throw std::runtime_error("writing vdb: " + r.error().message());
    }

    void suspend(const ReplicaSide& side, const std::string& vm) {
        ASSERT_EQ(side.virsh({"suspend", vm}).exit_code, 0);
    }
    void resume(const ReplicaSide& side, const std::string& vm) {
        ASSERT_EQ(side.virsh({"resume", vm}).exit_code, 0);
    }

    std::string hostb_uri;
    fs::path dir, ca;
    ReplicaSide a, b;
    std::list<lab::LabGuest> guests;
};

}  // namespace vmshadow::testing
