// SPDX-License-Identifier: MIT
// vmshadowd: the vmshadow service (see daemon.h and docs/DAEMON.md).
//
//   vmshadowd [--foreground] [--state-dir DIR] [--config FILE] [--socket PATH]
//             [--listen ADDR:PORT] [--pid-file FILE]
//
// The process: flags, the pid file (held with a lock: a second daemon on the same state dir
// refuses to start), signals (SIGTERM/SIGINT stop — running tasks cancelled cleanly —, SIGHUP
// reloads the config) taken with sigwait on the main thread so no handler runs inside the
// engine, sd_notify (READY, RELOADING, STOPPING, STATUS) under systemd's Type=notify, and,
// without --foreground, detaching once the service is ready (the parent exits 0 only then,
// so `vmshadowd && vmshadow status` works).
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <mutex>

#include "common/unique_fd.h"
#include "daemon/daemon.h"

namespace {

using namespace vmshadow;
namespace fs = std::filesystem;

std::mutex log_mutex;

void log_line(LogLevel level, std::string_view line) {
    std::lock_guard lock(log_mutex);
    std::time_t now = std::time(nullptr);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    std::fprintf(stderr, "%s %s %.*s\n", stamp, std::string(log_level_name(level)).c_str(),
                 static_cast<int>(line.size()), line.data());
    std::fflush(stderr);
}

// Holds the pid file locked for the daemon's life.
Result<UniqueFd> take_pid_file(const fs::path& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) return fail(ErrorKind::io, "pid file " + path.string() + ": " + std::strerror(errno));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        char buf[32] = {};
        (void)::pread(fd.get(), buf, sizeof buf - 1, 0);
        return fail(
            ErrorKind::conflict,
            "another vmshadowd (pid " + std::string(buf).substr(0, std::string(buf).find('\n')) +
                ") runs with this state dir (" + path.string() + " is locked): stop it first");
    }
    std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), pid.data(), pid.size(), 0) < 0) {
        return fail(ErrorKind::io, "pid file " + path.string() + ": " + std::strerror(errno));
    }
    return fd;
}

// Forks; the parent waits for the child's "ready" byte (or its death) and exits with 0 or 1.
// Returns in the child, with the fd it writes "ready" to.
int detach() {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return -1;
    pid_t pid = ::fork();
    if (pid < 0) return -1;
    if (pid > 0) {
        ::close(pipe_fds[1]);
        char byte = 0;
        ssize_t n = ::read(pipe_fds[0], &byte, 1);
        ::_exit(n == 1 && byte == 'R' ? 0 : 1);
    }
    ::close(pipe_fds[0]);
    ::setsid();
    return pipe_fds[1];
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"vmshadowd: protects VMs on a schedule (jobs, tasks, REST API, metrics, alerts)"};
    bool foreground = false;
    std::string state_dir = "/var/lib/vmshadow";
    std::string config = "/etc/vmshadow/vmshadowd.toml";
    std::string socket;
    std::optional<std::string> listen;
    std::string pid_file;
    std::string log_file;
    std::optional<std::string> web_dir;
    app.add_flag("--foreground", foreground, "stay in the foreground, log to stderr");
    app.add_option("--state-dir", state_dir, "tasks, tokens, TLS identity, socket")
        ->capture_default_str();
    app.add_option("--config", config, "jobs and settings (TOML)")->capture_default_str();
    app.add_option("--socket", socket, "the local API socket (default STATE-DIR/api.sock)");
    app.add_option("--listen", listen, "HTTPS address:port, overriding [daemon] listen; '' = none");
    app.add_option("--pid-file", pid_file, "default STATE-DIR/vmshadowd.pid");
    app.add_option("--log-file", log_file, "when detached (default STATE-DIR/vmshadowd.log)");
    app.add_option("--web-dir", web_dir,
                   "the dashboard's built files (default: share/vmshadow/web beside the binary, "
                   "the build tree's web/dist, /usr/local/share/vmshadow/web)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    std::error_code ec;
    fs::create_directories(state_dir, ec);
    if (pid_file.empty()) pid_file = (fs::path(state_dir) / "vmshadowd.pid").string();
    int ready_fd = -1;
    if (!foreground && !std::getenv("NOTIFY_SOCKET")) {
        if (log_file.empty()) log_file = (fs::path(state_dir) / "vmshadowd.log").string();
        ready_fd = detach();
        if (ready_fd < 0) {
            std::fprintf(stderr, "vmshadowd: cannot detach: %s\n", std::strerror(errno));
            return 1;
        }
        int log = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        int null = ::open("/dev/null", O_RDWR);
        if (null >= 0) ::dup2(null, 0);
        if (log >= 0) {
            ::dup2(log, 1);
            ::dup2(log, 2);
        }
    }
    auto pid = take_pid_file(pid_file);
    if (!pid) {
        log_line(LogLevel::error, pid.error().message());
        std::fprintf(stderr, "vmshadowd: %s\n", pid.error().message().c_str());
        return 1;
    }

    // Signals are taken by sigwait below; every thread the daemon starts inherits the mask.
    sigset_t signals;
    sigemptyset(&signals);
    for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&signals, s);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    daemon::DaemonOptions options;
    options.state_dir = state_dir;
    options.config_file = config;
    options.socket_path = socket;
    options.listen = listen;
    if (web_dir) options.web_dir = fs::path(*web_dir);
    options.log = log_line;
    auto started = daemon::Daemon::start(options);
    if (!started) {
        log_line(LogLevel::error, started.error().message());
        if (ready_fd < 0)
            std::fprintf(stderr, "vmshadowd: %s\n", started.error().message().c_str());
        ::unlink(pid_file.c_str());
        return 1;
    }
    auto& d = **started;
    std::string where = "socket " + d.socket_path().string();
    if (d.https_port()) where += ", https port " + std::to_string(d.https_port());
    log_line(LogLevel::info,
             "vmshadowd ready: " + where + "; certificate SHA-256 " + d.fingerprint());
    sd_notifyf(0, "READY=1\nSTATUS=serving on %s\nMAINPID=%d", where.c_str(), ::getpid());
    if (ready_fd >= 0) {
        (void)::write(ready_fd, "R", 1);
        ::close(ready_fd);
    }

    for (;;) {
        int sig = 0;
        if (sigwait(&signals, &sig) != 0) continue;
        if (sig == SIGHUP) {
            sd_notify(0, "RELOADING=1");
            (void)d.reload();
            sd_notify(0, "READY=1");
            continue;
        }
        log_line(LogLevel::info,
                 std::string("stopping (") + strsignal(sig) + "): running tasks are cancelled");
        sd_notify(0, "STOPPING=1");
        break;
    }
    d.stop();
    started->reset();
    ::unlink(pid_file.c_str());
    log_line(LogLevel::info, "vmshadowd stopped");
    return 0;
}
