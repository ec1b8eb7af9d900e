// SPDX-License-Identifier: MIT
#pragma once
// What the S3 integration tests share: the gateway they run against (the suite's own Ceph
// cluster, tests/lab/ceph-rgw.sh, whose env file s3_lab_main.cpp loaded), a bucket per test
// that is removed afterwards even when the test fails, and the fault-injecting proxy
// (tests/lab/s3-fault-proxy.py) as an RAII process.
//
// Environment: VMSHADOW_TEST_S3_ENDPOINT (http://127.0.0.1:PORT; unset = the tests skip),
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION (inherited by every vmshadow
// process), VMSHADOW_TEST_CEPH_CONF (the cluster's ceph.conf: buckets are removed with
// radosgw-admin, not with the client under test), VMSHADOW_TEST_S3_HTTPS_ENDPOINT and
// VMSHADOW_TEST_S3_CACERT (the https endpoint and its test CA, when the lab has them).

#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lab/lab_process.h"

#ifndef VMSHADOW_FAULT_PROXY
#error "VMSHADOW_FAULT_PROXY: the path of tests/lab/s3-fault-proxy.py, set by tests/CMakeLists.txt"
#endif

namespace vmshadow::testing {

inline std::string env_or_empty(const char* name) {
    const char* v = getenv(name);
    return v ? std::string(v) : std::string();
}

// The gateway's http endpoint, "" when no cluster is configured (the tests skip).
inline std::string s3_endpoint() {
    return env_or_empty("VMSHADOW_TEST_S3_ENDPOINT");
}

// A bucket name unique to this test and run: lowercase letters, digits and '-', <= 63.
inline std::string unique_bucket_name(const std::string& test) {
    std::string name = "s3lab-";
    for (char c : test) {
        if (name.size() >= 36) break;
        if (std::isalnum(static_cast<unsigned char>(c)))
            name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    std::mt19937_64 rng(std::random_device{}());
    std::ostringstream tail;
    tail << '-' << getpid() << '-' << std::hex << (rng() & 0xffffff);
    return name + tail.str();
}

// A bucket for one test: `location(endpoint)` is what vmshadow is given; the destructor removes
// the bucket and every object in it through radosgw-admin (when the cluster's ceph.conf is
// known), so a failing client cannot leave it behind.
class TestBucket {
  public:
    explicit TestBucket(const std::string& test) : name_(unique_bucket_name(test)) {}
    TestBucket(const TestBucket&) = delete;
    TestBucket& operator=(const TestBucket&) = delete;
    ~TestBucket() {
        std::string conf = env_or_empty("VMSHADOW_TEST_CEPH_CONF");
        if (conf.empty()) return;
        (void)lab::run_process({"timeout", "120", "radosgw-admin", "-c", conf, "bucket", "rm",
                                "--bucket=" + name_, "--purge-objects"});
    }
    const std::string& name() const { return name_; }
    std::string location(const std::string& endpoint) const {
        return "s3:" + endpoint + "/" + name_;
    }
    std::string location() const { return location(s3_endpoint()); }

  private:
    std::string name_;
};

struct ProxyStats {
    int requests = 0, forwarded = 0, slowdowns = 0, resets = 0, delays = 0;
};

// The fault-injecting proxy in front of the gateway, on a free loopback port, for the life of
// this object (then SIGTERM, and SIGKILL if it lingers; it also ends itself after an hour).
class FaultProxy {
  public:
    // `fault_rate` 0..1 of requests meet a fault, the kinds of `faults` in turn.
    FaultProxy(const std::string& upstream, const std::filesystem::path& dir, double fault_rate,
               const std::string& faults = "503,reset,delay")
        : log_(dir / "proxy.log"), stats_(dir / "proxy.json") {
        std::filesystem::path port_file = dir / "proxy.port";
        std::error_code ec;
        std::filesystem::remove(port_file, ec);
        std::vector<std::string> argv{"python3",      VMSHADOW_FAULT_PROXY,
                                      "--upstream",   upstream,
                                      "--port-file",  port_file.string(),
                                      "--fault-rate", std::to_string(fault_rate),
                                      "--faults",     faults,
                                      "--max-delay",  "1.5",
                                      "--log",        log_.string(),
                                      "--stats",      stats_.string(),
                                      "--lifetime",   "3600"};
        pid_ = fork();
        if (pid_ == 0) {
            std::vector<char*> args;
            for (auto& a : argv) args.push_back(a.data());
            args.push_back(nullptr);
            execvp(args[0], args.data());
            _exit(127);
        }
        for (int i = 0; i < 100 && port_ == 0; ++i) {
            std::ifstream in(port_file);
            if (!(in >> port_)) port_ = 0;
            if (port_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
    FaultProxy(const FaultProxy&) = delete;
    FaultProxy& operator=(const FaultProxy&) = delete;
    ~FaultProxy() {
        if (pid_ <= 0) return;
        kill(pid_, SIGTERM);
        for (int i = 0; i < 50; ++i) {
            if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }

    bool listening() const { return port_ != 0; }
    std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

    ProxyStats stats() const {
        ProxyStats s;
        std::ifstream in(stats_);
        auto j = nlohmann::json::parse(in, nullptr, false);
        if (j.is_discarded()) return s;
        s.requests = j.value("requests", 0);
        s.forwarded = j.value("forwarded", 0);
        s.slowdowns = j.value("503", 0);
        s.resets = j.value("reset", 0);
        s.delays = j.value("delay", 0);
        return s;
    }

    // The arrival time (Unix seconds) of every request the proxy saw, sorted (the log is
    // written as requests finish).
    std::vector<double> request_times() const {
        std::vector<double> times;
        std::ifstream in(log_);
        std::string line;
        while (std::getline(in, line)) {
            std::istringstream fields(line);
            double t = 0;
            if (fields >> t) times.push_back(t);
        }
        std::sort(times.begin(), times.end());
        return times;
    }

  private:
    std::filesystem::path log_, stats_;
    pid_t pid_ = -1;
    int port_ = 0;
};

// The most requests that arrived within any window of `seconds`.
inline int busiest_window(const std::vector<double>& times, double seconds) {
    int best = 0;
    std::size_t first = 0;
    for (std::size_t i = 0; i < times.size(); ++i) {
        while (times[i] - times[first] >= seconds) ++first;
        best = std::max(best, static_cast<int>(i - first + 1));
    }
    return best;
}

}  // namespace vmshadow::testing
