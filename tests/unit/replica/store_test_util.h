// SPDX-License-Identifier: MIT
#pragma once
// Helpers for the replica store's tests: a temp folder removed however the test ends, disk
// contents kept in memory as the expected bytes, and a point read back through qemu-img.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "common/process.h"
#include "replica/replica_store.h"

namespace vmshadow::replica::test {

namespace fs = std::filesystem;

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "vmshadow-replica-test-XXXXXX").string();
        path = ::mkdtemp(tmpl.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

inline std::string read_file(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

inline void write_file(const fs::path& file, const std::string& text) {
    std::ofstream(file, std::ios::binary | std::ios::trunc) << text;
}

// The bytes of an image (any format, its backing chain followed), through qemu-img convert.
inline std::string image_bytes(const fs::path& image, const fs::path& scratch_dir) {
    fs::path raw = scratch_dir / "read-back.raw";
    auto done =
        run_checked({"qemu-img", "convert", "-O", "raw", "--", image.string(), raw.string()});
    EXPECT_TRUE(done) << done.error().message();
    std::string bytes = read_file(raw);
    std::error_code ec;
    fs::remove(raw, ec);
    return bytes;
}

inline std::string point_bytes(const ReplicaStore& store, std::uint64_t seq, std::size_t disk,
                               const fs::path& scratch_dir) {
    auto chain = store.chain(seq, disk);
    EXPECT_TRUE(chain) << chain.error().message();
    if (!chain) return {};
    return image_bytes(chain->front(), scratch_dir);
}

inline std::string random_bytes(std::size_t n, unsigned seed) {
    std::string out(n, '\0');
    std::mt19937 rng(seed);
    for (auto& c : out) c = static_cast<char>(rng());
    return out;
}

inline std::span<const std::byte> as_bytes(const std::string& s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

inline StoreIdentity identity(std::vector<StoreDisk> disks, unsigned history = 4) {
    StoreIdentity id;
    id.vm_name = "web1";
    id.vm_uuid = "6f1c2d3e-0000-4000-8000-000000000001";
    id.primary_subject = "CN=hosta";
    id.primary_endpoint = "127.0.0.2:8471";
    id.domain_xml = "<domain type='kvm'><name>web1</name></domain>";
    id.disks = std::move(disks);
    id.history = history;
    return id;
}

inline CycleHeader header(const std::string& id, const std::string& base, const std::string& token,
                          bool full = false) {
    return {id, base, token, "2026-12-07T08:00:00Z", "crash", full};
}

// Files in `folder` whose names start with `prefix`.
inline std::size_t files_starting(const fs::path& folder, const std::string& prefix) {
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator(folder))
        if (e.path().filename().string().starts_with(prefix)) ++n;
    return n;
}

}  // namespace vmshadow::replica::test
