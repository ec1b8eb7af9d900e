// SPDX-License-Identifier: MIT
#pragma once
// A small fake vmshadowd for the client commands' tests: a net::HttpServer on a unix socket
// in a temp dir (optionally HTTPS on 127.0.0.1 too) answering from a handler the test gives,
// recording every request; and run(), which runs `vmshadow args...` against it as the binary
// would. The server and its temp dir go away with the object.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/app.h"
#include "cli/daemon_client.h"
#include "net/http_server.h"
#include "net/tls_identity.h"

namespace vmshadow::cli {
inline namespace fake_daemon {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

inline net::HttpResponse answer(int status, const json& body) {
    net::HttpResponse r;
    r.status = status;
    r.body = body.dump();
    return r;
}

// A daemon that answers from `route` and records every request it got.
class FakeDaemon {
  public:
    using Route = std::function<net::HttpResponse(const net::HttpRequest&)>;

    // With `tls`, it also listens on HTTPS on 127.0.0.1 with a certificate of its own.
    explicit FakeDaemon(Route route, bool tls = false) : route_(std::move(route)) {
        std::string tmpl = (fs::temp_directory_path() / "vmshadow-cli-daemon-XXXXXX").string();
        dir_ = ::mkdtemp(tmpl.data());
        socket_ = dir_ / "api.sock";
        net::HttpServerOptions options;
        options.unix_sockets.push_back({socket_, 0600});
        if (tls) {
            auto identity = net::ensure_tls_identity(dir_ / "tls");
            EXPECT_TRUE(identity) << (identity ? "" : identity.error().message());
            if (identity) {
                fingerprint_ = identity->sha256_fingerprint;
                net::TlsListener listener;
                listener.certificate_file = identity->certificate_file;
                listener.key_file = identity->key_file;
                options.tls.push_back(listener);
            }
        }
        options.threads = 2;
        options.idle_timeout = 5s;
        auto server = net::HttpServer::start(options, [this](const net::HttpRequest& r) {
            {
                std::lock_guard lock(mutex_);
                requests_.push_back(r);
            }
            return route_(r);
        });
        EXPECT_TRUE(server) << (server ? "" : server.error().message());
        if (server) server_ = std::move(*server);
    }
    ~FakeDaemon() {
        if (server_) server_->stop();
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    std::string url() const { return "unix:" + socket_.string(); }
    std::string https_url() const {
        return "https://127.0.0.1:" + std::to_string(server_ ? server_->tls_port() : 0);
    }
    const std::string& fingerprint() const { return fingerprint_; }
    const fs::path& dir() const { return dir_; }
    std::vector<net::HttpRequest> requests() {
        std::lock_guard lock(mutex_);
        return requests_;
    }
    DaemonConnection connection() const {
        DaemonConnection c;
        c.url = url();
        c.timeout = 5000ms;
        return c;
    }

  private:
    Route route_;
    fs::path dir_, socket_;
    std::string fingerprint_;
    std::unique_ptr<net::HttpServer> server_;
    std::mutex mutex_;
    std::vector<net::HttpRequest> requests_;
};

// Runs `vmshadow args...` against `daemon_url`, as the binary would.
inline int run(const std::string& daemon_url, std::vector<std::string> args,
               std::string* out = nullptr, std::string* err = nullptr) {
    ::setenv("VMSHADOW_DAEMON", daemon_url.c_str(), 1);
    ::setenv("VMSHADOW_CONFIG", "/nonexistent/vmshadow.conf", 1);
    args.insert(args.begin(), "vmshadow");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    int code = run_cli(static_cast<int>(argv.size()), argv.data());
    std::string o = ::testing::internal::GetCapturedStdout();
    std::string e = ::testing::internal::GetCapturedStderr();
    ::unsetenv("VMSHADOW_DAEMON");
    if (out) *out = o;
    if (err) *err = e;
    return code;
}

}  // namespace fake_daemon
}  // namespace vmshadow::cli
