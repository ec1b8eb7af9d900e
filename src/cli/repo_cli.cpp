// SPDX-License-Identifier: MIT
#include "cli/repo_cli.h"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

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

}  // namespace vmshadow::cli
