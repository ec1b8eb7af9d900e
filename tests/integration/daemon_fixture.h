// SPDX-License-Identifier: MIT
#pragma once
// The vmshadowd integration tests' fixture: a lab guest and repository (VmBackupTest), plus
// the real vmshadowd started with its own state dir, config and unix socket and an HTTPS
// listener on 127.0.0.1 (a free port), stopped (SIGTERM, then SIGKILL of its group) and
// removed even when the test fails. VMSHADOWD_BINARY is the path CMake compiled in.
// DaemonProcess is one such daemon on its own; tests that need two (the replica tests:
// replica_fixture.h) hold two of them.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "integration/vm_backup_fixture.h"
#include "net/http_client.h"

namespace vmshadow::testing {

// One real vmshadowd: its files in `home` (state/, vmshadowd.toml, vmshadowd-N.log), its
// process group, and requests to its unix socket and HTTPS listener. Stopped on destruction.
class DaemonProcess {
  public:
    DaemonProcess() = default;
    explicit DaemonProcess(const fs::path& where) { set_home(where); }
    DaemonProcess(const DaemonProcess&) = delete;
    DaemonProcess& operator=(const DaemonProcess&) = delete;
    ~DaemonProcess() { stop_daemon(); }

    void set_home(const fs::path& where) {
        home = where;
        state_dir = home / "state";
        config_file = home / "vmshadowd.toml";
        socket = state_dir / "api.sock";
    }

    // Starts vmshadowd in its own process group; waits until it says it is ready.
    void start_daemon(const std::vector<std::string>& env_extra = {}) {
        log_file = home / ("vmshadowd-" + std::to_string(++starts) + ".log");
        std::vector<std::string> args{VMSHADOWD_BINARY,   "--foreground", "--state-dir",
                                      state_dir.string(), "--config",     config_file.string()};
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        std::vector<std::string> env_strings;
        for (char** e = environ; *e; ++e) env_strings.push_back(*e);
        for (const auto& e : env_extra) env_strings.push_back(e);
        std::vector<char*> envp;
        for (auto& e : env_strings) envp.push_back(e.data());
        envp.push_back(nullptr);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, log_file.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
        posix_spawnattr_setpgroup(&attr, 0);
        ASSERT_EQ(posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), envp.data()), 0);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        std::regex ready("vmshadowd ready: .*https port ([0-9]+)");
        for (int i = 0; i < 300; ++i) {
            std::smatch m;
            std::string log = read_log();
            if (std::regex_search(log, m, ready)) {
                https_port = static_cast<std::uint16_t>(std::stoi(m[1]));
                return;
            }
            int status = 0;
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                FAIL() << "vmshadowd exited at start:\n" << log;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        FAIL() << "vmshadowd did not become ready in 30 s:\n" << read_log();
    }

    // SIGTERM (running tasks cancelled cleanly), then SIGKILL of the group after 90 s.
    void stop_daemon() {
        if (pid <= 0) return;
        ::kill(pid, SIGTERM);
        wait_exit(std::chrono::seconds(90));
    }
    void kill_daemon() {
        if (pid <= 0) return;
        ::kill(-pid, SIGKILL);
        wait_exit(std::chrono::seconds(10));
    }
    // Waits for the daemon to exit on its own (a test kill point).
    bool wait_exit(std::chrono::seconds limit) {
        for (auto end = std::chrono::steady_clock::now() + limit;
             std::chrono::steady_clock::now() < end;) {
            int status = 0;
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        ::kill(-pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        pid = -1;
        return false;
    }

    std::string read_log() const {
        std::ifstream in(log_file);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }

    // A request over the unix socket (admin).
    net::HttpResponse api(const std::string& method, const std::string& target,
                          const std::string& body = "") {
        net::HttpEndpoint e;
        e.scheme = net::HttpEndpoint::Scheme::unix_socket;
        e.socket_path = socket;
        net::HttpClientRequest r;
        r.method = method;
        r.target = "/api/v1" + target;
        r.body = body;
        auto response = net::http_request(e, r);
        if (!response)
            throw std::runtime_error(method + " " + target + ": " + response.error().message());
        return *response;
    }
    json api_json(const std::string& method, const std::string& target,
                  const std::string& body = "", int status = 0) {
        auto r = api(method, target, body);
        if (status) {
            EXPECT_EQ(r.status, status) << method << " " << target << ": " << r.body;
        }
        auto j = json::parse(r.body, nullptr, false);
        if (j.is_discarded()) throw std::runtime_error("not JSON: " + r.body);
        return j;
    }
    // A request over HTTPS, with a bearer token when given.
    net::HttpResponse https(const std::string& method, const std::string& target,
                            const std::string& token = "", const std::string& body = "") {
        net::HttpEndpoint e;
        e.scheme = net::HttpEndpoint::Scheme::https;
        e.host = "127.0.0.1";
        e.port = https_port;
        e.insecure = true;
        net::HttpClientRequest r;
        r.method = method;
        r.target = "/api/v1" + target;
        r.body = body;
        if (!token.empty()) r.headers.push_back({"Authorization", "Bearer " + token});
        auto response = net::http_request(e, r);
        if (!response)
            throw std::runtime_error(method + " " + target + ": " + response.error().message());
        return *response;
    }

    // Polls a task until it has ended (or the limit passes); its JSON.
    json wait_task(std::int64_t id, std::chrono::seconds limit = std::chrono::seconds(300)) {
        json t;
        for (auto end = std::chrono::steady_clock::now() + limit;
             std::chrono::steady_clock::now() < end;
             std::this_thread::sleep_for(std::chrono::milliseconds(500))) {
            t = api_json("GET", "/tasks/" + std::to_string(id));
            std::string s = t.value("state", "");
            if (s != "queued" && s != "running") return t;
        }
        ADD_FAILURE() << "task " << id << " did not end: " << t.dump();
        return t;
    }
    std::int64_t run_job(const std::string& job) {
        auto j = api_json("POST", "/jobs/" + job + "/run", "", 202);
        return j.at("task").get<std::int64_t>();
    }

    fs::path home, state_dir, config_file, socket, log_file;
    pid_t pid = -1;
    int starts = 0;
    std::uint16_t https_port = 0;
};

class DaemonTest : public VmBackupTest, public DaemonProcess {
  public:  // the tests' free helpers call them too
    using VmBackupTest::checkpoints;
    using VmBackupTest::scratch_leftovers;

    void SetUp() override {
        VmBackupTest::SetUp();
        set_home(dir);
    }
    void TearDown() override {
        stop_daemon();
        VmBackupTest::TearDown();
    }

    // The config: the test's repository as "main", its scratch dir, and `jobs` (TOML).
    void write_config(const std::string& jobs, const std::string& extra = "") {
        std::ofstream out(config_file);
        out << "[daemon]\nlisten = \"127.0.0.1:0\"\nscratch-dir = \"" << scratch.string()
            << "\"\nconnect-uri = \"" << lab::lab_uri() << "\"\n"
            << extra << "\n[repository.main]\npath = \"" << repo.string() << "\"\n\n"
            << jobs;
    }
};

}  // namespace vmshadow::testing
