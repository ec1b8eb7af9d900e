// SPDX-License-Identifier: MIT
#include "cli/repo_cli.h"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>

#include "cli/numeric_option.h"

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

void add_repository_access_options(CLI::App& app, GlobalOptions& g) {
    app.add_option("--s3-credentials", g.s3_credentials,
                   "S3 credentials file (TOML: access_key_id, secret_access_key, region; "
                   "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY win when set)")
        ->envname("VMSHADOW_S3_CREDENTIALS");
    app.add_option("--cacert", g.cacert, "CA certificate (PEM) of an S3 endpoint's certificate")
        ->envname("VMSHADOW_S3_CACERT");
    app.add_flag("--s3-virtual-hosted", g.s3_virtual_hosted,
                 "S3: address buckets as https://BUCKET.HOST/ (AWS) instead of "
                 "https://HOST/BUCKET/ (default; MinIO and Ceph RGW)")
        ->envname("VMSHADOW_S3_VIRTUAL_HOSTED");
    add_whole_number_option(app, "--s3-max-rps", g.s3_max_rps, 0, 1000000,
                            "S3: at most this many requests per second (default 0: no cap)")
        ->envname("VMSHADOW_S3_MAX_RPS");
    add_size_option(app, "--s3-max-bandwidth", g.s3_max_bandwidth, 0, 1ULL << 40,
                    "S3: at most this many bytes per second, e.g. 50M (default 0: no cap)")
        ->envname("VMSHADOW_S3_MAX_BANDWIDTH");
    app.add_option("--retry-lock", g.retry_lock,
                   "wait up to DURATION (30s, 5m, 2h) for a repository lock another process "
                   "holds, instead of failing at once")
        ->check([](const std::string& text) -> std::string {
            return parse_lock_wait(text) ? "" : "a duration such as 30s, 5m or 2h";
        });
}

std::optional<std::int64_t> parse_lock_wait(std::string_view text) {
    if (text.empty()) return std::nullopt;
    std::int64_t total = 0, number = 0;
    bool digits = false, unit_seen = false;
    for (char c : text) {
        if (c >= '0' && c <= '9') {
            number = number * 10 + (c - '0');
            digits = true;
            if (number > 366LL * 24 * 3600) return std::nullopt;
            continue;
        }
        std::int64_t unit = c == 's' ? 1 : c == 'm' ? 60 : c == 'h' ? 3600 : 0;
        if (!unit || !digits) return std::nullopt;
        total += number * unit;
        number = 0;
        digits = false;
        unit_seen = true;
    }
    if (digits) {
        if (unit_seen) return std::nullopt;  // "5m30": a number without its unit
        total += number;
    }
    if (total > 366LL * 24 * 3600) return std::nullopt;
    return total;
}

repo::StorageOptions storage_options(const GlobalOptions& global) {
    repo::StorageOptions o;
    o.credentials_file = global.s3_credentials;
    o.ca_file = global.cacert;
    o.virtual_hosted = global.s3_virtual_hosted;
    o.max_requests_per_second = global.s3_max_rps;
    o.max_bytes_per_second = global.s3_max_bandwidth;
    if (const char* cache = std::getenv("VMSHADOW_CACHE_DIR"); cache && *cache) o.cache_dir = cache;
    o.log = [](const std::string& line) { std::cerr << "vmshadow: " << line << std::endl; };
    return o;
}

Result<std::unique_ptr<repo::Repository>> open_repository(const GlobalOptions& global) {
    repo::OpenOptions options;
    options.password = [&global] { return repository_password(global); };
    options.storage = storage_options(global);
    options.lock_wait = std::chrono::seconds(parse_lock_wait(global.retry_lock).value_or(0));
    return repo::Repository::open(global.repo, options);
}

}  // namespace vmshadow::cli
