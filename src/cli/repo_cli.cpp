// SPDX-License-Identifier: MIT
#include "cli/repo_cli.h"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

namespace vmshadow::cli {
namespace {

Result<std::string> read_first_line(const std::string& path) {
    std::ifstream in(path);
    if (!in) return fail(ErrorKind::not_found, "cannot read password file " + path);
    std::string line;
    std::getline(in, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty())
        return fail(ErrorKind::invalid_argument, "password file " + path + " is empty");
    return line;
}

// Reads a line from the controlling terminal with echo off.
Result<std::string> prompt_tty(const std::string& prompt, const std::string& how) {
    int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0 || !::isatty(fd)) {
        if (fd >= 0) ::close(fd);
        return fail(ErrorKind::permission,
                    "a password is needed and there is no terminal to ask on: " + how);
    }
    struct termios old {};
    bool restore = ::tcgetattr(fd, &old) == 0;
    if (restore) {
        struct termios quiet = old;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        ::tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    (void)!::write(fd, prompt.data(), prompt.size());
    std::string line;
    char c;
    while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
    (void)!::write(fd, "\n", 1);
    if (restore) ::tcsetattr(fd, TCSAFLUSH, &old);
    ::close(fd);
    if (line.empty()) return fail(ErrorKind::permission, "no password given");
    return line;
}

}  // namespace

Result<std::string> repository_password(const GlobalOptions& global) {
    if (const char* env = std::getenv("VMSHADOW_PASSWORD"); env && *env) return std::string(env);
    if (!global.password_file.empty()) return read_first_line(global.password_file);
    return prompt_tty("repository password: ",
                      "set VMSHADOW_PASSWORD or pass --password-file FILE");
}

Result<std::string> new_password(const std::string& file, const std::string& env_name,
                                 const std::string& prompt) {
    if (const char* env = std::getenv(env_name.c_str()); env && *env) return std::string(env);
    if (!file.empty()) return read_first_line(file);
    std::string how = "set " + env_name + " or pass the password file option";
    auto first = prompt_tty(prompt + ": ", how);
    if (!first) return first;
    auto second = prompt_tty("again: ", how);
    if (!second) return second;
    if (*first != *second) return fail(ErrorKind::invalid_argument, "the passwords differ");
    return first;
}

Result<std::unique_ptr<repo::Repository>> open_repository(const GlobalOptions& global) {
    repo::OpenOptions options;
    options.password = [&global] { return repository_password(global); };
    return repo::Repository::open(global.repo, options);
}

std::string human_bytes(std::uint64_t bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)),
      tty_(::isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() {
    finish();
}

void ProgressBar::update(std::uint64_t done, std::uint64_t total) {
    if (!tty_ || total == 0) return;
    auto now = std::chrono::steady_clock::now();
    if (drawn_ && now - last_ < std::chrono::milliseconds(150) && done < total) return;
    last_ = now;
    double elapsed = std::chrono::duration<double>(now - start_).count();
    double rate = elapsed > 0 ? double(done) / elapsed : 0;
    double frac = std::min(1.0, double(done) / double(total));
    constexpr int kWidth = 24;
    int fill = static_cast<int>(frac * kWidth);
    std::string bar = std::string(fill, '#') + std::string(kWidth - fill, '-');
    char eta[32] = "--:--";
    if (rate > 0 && done < total) {
        int s = static_cast<int>(double(total - done) / rate);
        std::snprintf(eta, sizeof eta, "%d:%02d", s / 60, s % 60);
    }
    std::fprintf(stderr, "\r\033[K%s [%s] %5.1f%% %s/%s %s/s ETA %s", label_.c_str(), bar.c_str(),
                 frac * 100, human_bytes(done).c_str(), human_bytes(total).c_str(),
                 human_bytes(static_cast<std::uint64_t>(rate)).c_str(), eta);
    std::fflush(stderr);
    drawn_ = true;
}

void ProgressBar::finish() {
    if (tty_ && drawn_) {
        std::fprintf(stderr, "\r\033[K");
        std::fflush(stderr);
    }
    drawn_ = false;
}

}  // namespace vmshadow::cli
