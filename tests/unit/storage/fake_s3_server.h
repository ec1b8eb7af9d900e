// SPDX-License-Identifier: MIT
#pragma once
// FakeS3Server: a tiny HTTP/1.1 server on 127.0.0.1 that answers each request with what a
// test's handler returns, verbatim: S3 answers a real gateway rarely gives (503 SlowDown,
// resets, short or overlong ranges, hostile XML), so the S3 store's handling of them is
// tested without a cluster. Signatures are not checked. Keep-alive and "Expect:
// 100-continue" are honoured so curl behaves as with a gateway. Stopped and joined by its
// destructor; every socket it opened is closed.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"

namespace vmshadow::storage::testing {

struct FakeRequest {
    std::string method;
    std::string target;   // path and query as sent
    std::string headers;  // raw, lower-cased
    std::string body;
};

// What to answer: a raw HTTP response, or an empty string to drop the connection unanswered.
using FakeHandler = std::function<std::string(const FakeRequest&)>;

inline std::string http_answer(int status, const std::string& body,
                               const std::string& extra_headers = "") {
    return "HTTP/1.1 " + std::to_string(status) +
           " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra_headers +
           "\r\n" + body;
}

class FakeS3Server {
  public:
    explicit FakeS3Server(FakeHandler handler) : handler_(std::move(handler)) {
        listener_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address);
        ::listen(listener_.get(), 64);
        socklen_t size = sizeof address;
        ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&address), &size);
        port_ = ntohs(address.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~FakeS3Server() {
        stop_ = true;
        thread_.join();
        for (auto& t : connections_) t.join();
    }
    FakeS3Server(const FakeS3Server&) = delete;
    FakeS3Server& operator=(const FakeS3Server&) = delete;

    std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
    std::vector<FakeRequest> requests() {
        std::lock_guard lock(mutex_);
        return requests_;
    }

  private:
    static bool wait_readable(int fd, const std::atomic<bool>& stop) {
        while (!stop) {
            pollfd p{fd, POLLIN, 0};
            int n = ::poll(&p, 1, 50);
            if (n > 0) return true;
            if (n < 0) return false;
        }
        return false;
    }

    void serve() {
        while (wait_readable(listener_.get(), stop_)) {
            int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) continue;
            connections_.emplace_back([this, fd] { converse(UniqueFd(fd)); });
        }
    }

    // Reads until `buffer` holds `size` bytes; false when the peer closed or we stop.
    bool fill(int fd, std::string& buffer, std::size_t size) {
        char chunk[65536];
        while (buffer.size() < size) {
            if (!wait_readable(fd, stop_)) return false;
            ssize_t n = ::read(fd, chunk, sizeof chunk);
            if (n <= 0) return false;
            buffer.append(chunk, static_cast<std::size_t>(n));
        }
        return true;
    }

    void converse(UniqueFd fd) {
        std::string buffer;
        while (!stop_) {
            std::size_t end;
            while ((end = buffer.find("\r\n\r\n")) == std::string::npos)
                if (!fill(fd.get(), buffer, buffer.size() + 1)) return;
            FakeRequest request;
            std::string head = buffer.substr(0, end + 2);
            buffer.erase(0, end + 4);
            auto first_space = head.find(' ');
            request.method = head.substr(0, first_space);
            request.target =
                head.substr(first_space + 1, head.find(' ', first_space + 1) - first_space - 1);
            request.headers = head;
            for (auto& c : request.headers)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            std::size_t length = 0;
            if (auto at = request.headers.find("content-length:"); at != std::string::npos)
                length = std::stoul(request.headers.substr(at + 15));
            if (request.headers.find("expect: 100-continue") != std::string::npos) {
                std::string go = "HTTP/1.1 100 Continue\r\n\r\n";
                (void)!::write(fd.get(), go.data(), go.size());
            }
            if (!fill(fd.get(), buffer, length)) return;
            request.body = buffer.substr(0, length);
            buffer.erase(0, length);
            {
                std::lock_guard lock(mutex_);
                requests_.push_back(request);
            }
            std::string answer = handler_(request);
            if (answer.empty()) return;  // a reset: the connection closes unanswered
            std::size_t sent = 0;
            while (sent < answer.size()) {
                ssize_t n = ::write(fd.get(), answer.data() + sent, answer.size() - sent);
                if (n <= 0) return;
                sent += static_cast<std::size_t>(n);
            }
        }
    }

    FakeHandler handler_;
    UniqueFd listener_;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    std::vector<std::thread> connections_;  // touched by the accepting thread only until join
    std::mutex mutex_;
    std::vector<FakeRequest> requests_;
};

}  // namespace vmshadow::storage::testing
