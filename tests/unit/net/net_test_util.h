// SPDX-License-Identifier: MIT
#pragma once
// Helpers of the net layer's tests: a temp dir removed with everything in it, raw sockets to
// speak to a server byte by byte (hostile input), and a server started on the test's own
// unix socket or 127.0.0.1 port 0. Every read is bounded in time.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/unique_fd.h"

namespace vmshadow::test {

struct NetTempDir {
    std::filesystem::path path;
    NetTempDir() {
        // Short: a unix socket path must fit in 108 bytes.
        std::string tmpl = "/tmp/vmsnet-XXXXXX";
        path = ::mkdtemp(tmpl.data());
    }
    ~NetTempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    NetTempDir(const NetTempDir&) = delete;
    NetTempDir& operator=(const NetTempDir&) = delete;
    std::filesystem::path at(const char* name) const { return path / name; }
};

inline UniqueFd connect_unix(const std::filesystem::path& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return {};
    return fd;
}

inline UniqueFd connect_tcp(std::uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return {};
    return fd;
}

inline bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n <= 0) return false;
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

struct ReadResult {
    std::string data;
    bool closed = false;  // the peer closed (EOF or reset) before the limit
};

// Reads until the peer closes, `until` appears in what was read, or `limit` passes.
inline ReadResult read_for(int fd, std::chrono::milliseconds limit, std::string_view until = {}) {
    ReadResult out;
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
        if (!until.empty() && out.data.find(until) != std::string::npos) return out;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return out;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return out;
        char buffer[4096];
        ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n <= 0) {
            out.closed = true;
            return out;
        }
        out.data.append(buffer, static_cast<std::size_t>(n));
    }
}

inline std::size_t count_of(std::string_view text, std::string_view what) {
    std::size_t count = 0;
    for (auto pos = text.find(what); pos != std::string_view::npos;
         pos = text.find(what, pos + what.size()))
        ++count;
    return count;
}

}  // namespace vmshadow::test
