// SPDX-License-Identifier: MIT
#pragma once
// Shared pieces of the `vmshadow backup` integration tests: a lab guest, a repository and
// a scratch directory per test, all removed even when the test fails; running the real
// binary and reading its JSON; restoring a disk and looking inside it.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <list>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "integration/cli_runner.h"
#include "lab/lab_guest.h"
#include "lab/lab_process.h"

namespace vmshadow::testing {

namespace fs = std::filesystem;
using nlohmann::json;

// The guest's filesystems frozen through its agent (flushed, no writes) while it lives, so a
// disk read meanwhile is the disk a backup or change read of that instant saw; thawed even
// when the test fails.
class FrozenGuest {
  public:
    explicit FrozenGuest(lab::LabGuest& g) : g_(g) {
        auto r =
            g_.agent_command(R"({"execute":"guest-fsfreeze-freeze"})", std::chrono::seconds(60));
        if (!r) throw std::runtime_error("freeze: " + r.error().message());
    }
    ~FrozenGuest() {
        (void)g_.agent_command(R"({"execute":"guest-fsfreeze-thaw"})", std::chrono::seconds(60));
    }
    FrozenGuest(const FrozenGuest&) = delete;
    FrozenGuest& operator=(const FrozenGuest&) = delete;

  private:
    lab::LabGuest& g_;
};

// Destroys and undefines a VM a restore created, and removes its folder, even on failure.
struct RestoredVm {
    std::string name;
    fs::path folder;
    ~RestoredVm() {
        (void)lab::run_process({"virsh", "-c", lab::lab_uri(), "destroy", name});
        (void)lab::run_process({"virsh", "-c", lab::lab_uri(), "undefine", name,
                                "--checkpoints-metadata", "--snapshots-metadata", "--nvram"});
        std::error_code ec;
        if (!folder.empty()) fs::remove_all(folder, ec);
    }
};

inline bool agent_answers(const std::string& vm, std::chrono::seconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end;
         std::this_thread::sleep_for(std::chrono::seconds(1))) {
        auto r = lab::run_process({"virsh", "-c", lab::lab_uri(), "qemu-agent-command", vm,
                                   R"({"execute":"guest-ping"})", "--timeout", "5"});
        if (r && r->exit_code == 0) return true;
    }
    return false;
}

inline std::string dumpxml(const std::string& vm) {
    auto r = lab::run_checked({"virsh", "-c", lab::lab_uri(), "dumpxml", vm});
    return r ? *r : std::string();
}

inline std::string current_test_name() {
    return ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

class VmBackupTest : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string tmpl = (lab::run_dir() / "backup-test-XXXXXX").string();
        fs::create_directories(lab::run_dir());
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
        dir = tmpl;
        repo = dir / "repo";
        scratch = dir / "scratch";
        writers_dir = dir / "writers.d";
        state_file = dir / "writers.json";
        fs::create_directories(scratch);
        fs::create_directories(writers_dir);
        auto init = run({"repo", "init", repo.string()});
        ASSERT_EQ(init.exit_code, 0) << init.err;
    }
    void TearDown() override {
        guests.clear();  // domains first: they hold files in dir
        std::error_code ec;
        fs::remove_all(dir, ec);
    }

    lab::LabGuest& boot(const lab::GuestOptions& options, std::string suffix = "") {
        auto guest = lab::LabGuest::create(options, current_test_name() + suffix);
        if (!guest) throw std::runtime_error("create: " + guest.error().message());
        guests.push_back(std::move(*guest));
        lab::LabGuest& g = guests.back();
        if (auto s = g.start(); !s) throw std::runtime_error(s.error().message());
        if (options.agent == lab::AgentMode::on && options.agent_channel) {
            if (auto s = g.wait_for_agent(); !s) throw std::runtime_error(s.error().message());
        } else {
            // The guest's init (tests/lab/guest/init) says "lab: agent off" or "lab: agent
            // stopped (hang)" before "lab: ready": ready is the later of each.
            if (options.agent == lab::AgentMode::off)
                if (auto s = g.wait_for_serial("lab: agent off"); !s)
                    throw std::runtime_error(s.error().message());
            if (auto s = g.wait_for_serial("lab: ready"); !s)
                throw std::runtime_error(s.error().message());
        }
        return g;
    }

    // `vmshadow --repo R ...` with this test's scratch, writers and state file.
    lab::ProcessOutput run(std::vector<std::string> args) {
        std::vector<std::string> full{"--repo", repo.string(), "--scratch-dir", scratch.string()};
        full.insert(full.end(), args.begin(), args.end());
        return run_vmshadow(full);
    }
    lab::ProcessOutput backup(std::vector<std::string> args) {
        std::vector<std::string> full{"backup",        "--json",
                                      "--writers-dir", writers_dir.string(),
                                      "--state-file",  state_file.string()};
        full.insert(full.end(), args.begin(), args.end());
        return run(full);
    }
    // The one VM object of a successful `backup --json`.
    json backup_ok(std::vector<std::string> args) {
        auto out = backup(std::move(args));
        EXPECT_EQ(out.exit_code, 0) << out.out << out.err;
        auto j = json::parse(out.out, nullptr, false);
        if (j.is_discarded() || !j.contains("vms") || j["vms"].empty())
            throw std::runtime_error("backup printed no result: " + out.out + out.err);
        return j["vms"][0];
    }
    static const json* disk_of(const json& vm, const std::string& target) {
        for (const auto& d : vm["disks"])
            if (d["disk"] == target) return &d;
        return nullptr;
    }

    // A disk's "mode" in a backup result, "missing" when the disk is not there.
    static std::string mode_of(const json& vm, const std::string& target) {
        const json* d = disk_of(vm, target);
        return d ? d->value("mode", "none") : "missing";
    }

    // Restores one disk of `point` as a raw file and returns its path.
    fs::path restore_disk(const std::string& point, const std::string& disk) {
        fs::path out = dir / (point.substr(0, 12) + "-" + disk + ".raw");
        auto r = run({"image", "restore", point, out.string(), "--disk", disk});
        if (r.exit_code != 0) throw std::runtime_error("image restore: " + r.err);
        return out;
    }

    // What a guest file holds on a restored image ("" when the file is missing or empty).
    static std::string file_on_image(const fs::path& image, const std::string& path) {
        auto text = lab::read_file_from_image(image, path);
        return text ? *text : std::string();
    }

    // The agent's view of the guest's filesystems: "thawed" or "frozen".
    static std::string freeze_status(lab::LabGuest& g) {
        auto r = g.agent_command(R"({"execute":"guest-fsfreeze-status"})");
        return r ? json::parse(*r).get<std::string>() : "unknown: " + r.error().message();
    }

    // Files left in the scratch directory (scratch images, memory images).
    std::vector<std::string> scratch_leftovers() const {
        std::vector<std::string> out;
        for (const auto& e : fs::directory_iterator(scratch)) out.push_back(e.path().string());
        return out;
    }

    // Names of the domain's checkpoints.
    static std::vector<std::string> checkpoints(const lab::LabGuest& g) {
        auto out = lab::run_checked(
            {"virsh", "-c", lab::lab_uri(), "checkpoint-list", g.name(), "--name"});
        std::vector<std::string> names;
        if (!out) return names;
        std::string line;
        for (char c : *out + "\n") {
            if (c == '\n') {
                if (!line.empty()) names.push_back(line);
                line.clear();
            } else {
                line += c;
            }
        }
        return names;
    }

    std::list<lab::LabGuest> guests;  // a list: boot() hands out references
    fs::path dir, repo, scratch, writers_dir, state_file;
};

}  // namespace vmshadow::testing
