// SPDX-License-Identifier: MIT
// The repository on S3, end to end on a real Ceph RADOS Gateway (the suite's own cluster,
// tests/lab/ceph-rgw.sh) with the real vmshadow binary: a VM's full and incremental backups
// restore and boot from the bucket; two processes back up into one bucket at once; gc runs
// while backups run, 50 rounds, and every point still restores bit for bit; through a proxy
// that answers 10 % of requests with 503 SlowDown, resets or delays, backups complete, the
// repository checks clean and the retries are logged; a request-rate cap holds at the wire;
// an https endpoint is reached with --cacert and refused without it.
#include <openssl/evp.h>

#include <future>

#include "integration/s3_lab.h"
#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

constexpr int kSecondsPerCommand = 300;  // any one vmshadow command; the suite must not hang

// `vmshadow ARGS...`, killed after `seconds` (exit 124 then).
lab::ProcessOutput vmshadow_bounded(const std::vector<std::string>& args,
                                    int seconds = kSecondsPerCommand) {
    std::vector<std::string> argv{"timeout", "-k", "10", std::to_string(seconds), VMSHADOW_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = lab::run_process(argv);
    return r ? *r : lab::ProcessOutput{-1, "", r.error().message()};
}

std::string sha256_of_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
    std::vector<char> buf(1 << 20);
    while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0)
        EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(in.gcount()));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
        out += hex[md[i] >> 4];
        out += hex[md[i] & 15];
    }
    return out;
}

// Writes `length` random bytes at `offset` of `file` (creating it), so backups have news.
void scribble(const fs::path& file, std::uint64_t offset, std::size_t length,
              std::mt19937_64& rng) {
    std::vector<char> bytes(length);
    for (auto& b : bytes) b = static_cast<char>(rng());
    std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
    if (!f) f.open(file, std::ios::binary | std::ios::out);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

fs::path random_image(const fs::path& path, std::size_t bytes, std::mt19937_64& rng) {
    std::error_code ec;
    fs::remove(path, ec);
    scribble(path, 0, bytes, rng);
    return path;
}

// A scratch directory and a bucket per test (image tests: no guest).
class S3RepoTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (s3_endpoint().empty())
            GTEST_SKIP() << "VMSHADOW_TEST_S3_ENDPOINT is not set (ceph-rgw.sh up)";
        std::string tmpl = (lab::run_dir() / "s3-test-XXXXXX").string();
        fs::create_directories(lab::run_dir());
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
        dir = tmpl;
        bucket = std::make_unique<TestBucket>(current_test_name());
        repo = bucket->location();
        auto init = vmshadow_bounded({"repo", "init", repo});
        ASSERT_EQ(init.exit_code, 0) << init.out << init.err;
    }
    void TearDown() override {
        bucket.reset();
        std::error_code ec;
        if (!dir.empty()) fs::remove_all(dir, ec);
    }
    lab::ProcessOutput run(std::vector<std::string> args, const std::string& location = "") {
        std::vector<std::string> full{"--repo", location.empty() ? repo : location, "--retry-lock",
                                      "5m"};
        full.insert(full.end(), args.begin(), args.end());
        return vmshadow_bounded(full);
    }
    // The id of the point a successful `image backup` made.
    std::string backup_image(const fs::path& image, const std::string& name,
                             const std::string& location = "") {
        auto r = run({"--json", "image", "backup", image.string(), "--name", name}, location);
        EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
        auto j = json::parse(r.out, nullptr, false);
        return j.is_discarded() ? std::string() : j.value("id", std::string());
    }
    std::string restored_hash(const std::string& point, const std::string& location = "") {
        fs::path out = dir / ("restored-" + point.substr(0, 12) + ".raw");
        auto r = run({"image", "restore", point, out.string()}, location);
        EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
        std::string h = r.exit_code == 0 ? sha256_of_file(out) : "restore failed";
        std::error_code ec;
        fs::remove(out, ec);
        return h;
    }

    fs::path dir;
    std::unique_ptr<TestBucket> bucket;
    std::string repo;
    std::mt19937_64 rng{std::random_device{}()};
};

TEST_F(S3RepoTest, TwoProcessesBackingUpIntoOneBucketAtOnceBothRestore) {
    fs::path a = random_image(dir / "a.raw", 48 << 20, rng);
    fs::path b = random_image(dir / "b.raw", 48 << 20, rng);
    const std::string ha = sha256_of_file(a), hb = sha256_of_file(b);
    auto first = std::async(std::launch::async, [&] { return backup_image(a, "alpha"); });
    auto second = std::async(std::launch::async, [&] { return backup_image(b, "beta"); });
    const std::string pa = first.get(), pb = second.get();
    ASSERT_FALSE(pa.empty());
    ASSERT_FALSE(pb.empty());
    auto check = run({"repo", "check", "--read-data"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    EXPECT_EQ(restored_hash(pa), ha);
    EXPECT_EQ(restored_hash(pb), hb);
}

// gc takes the exclusive lock: a backup that meets it waits (--retry-lock) and what it
// stores is never deleted under it. Each round changes the image and backs it up while
// another image's points are pruned (gc with no grace period deletes the packs of the one it
// forgets, backed up just before).
TEST_F(S3RepoTest, GcRunningWhileBackupsRunFiftyRoundsEveryPointRestores) {
    constexpr int kRounds = 50;
    fs::path keep = random_image(dir / "keep.raw", 4 << 20, rng);
    fs::path junk = dir / "junk.raw";
    std::vector<std::pair<std::string, std::string>> points;  // id, hash of the image then
    const auto start = std::chrono::steady_clock::now();
    for (int round = 0; round < kRounds; ++round) {
        scribble(keep, (rng() % 64) * 65536, 65536, rng);
        random_image(junk, 256 << 10, rng);
        ASSERT_FALSE(backup_image(junk, "junk").empty()) << "round " << round;
        const std::string hash = sha256_of_file(keep);
        auto kept = std::async(std::launch::async, [&] { return backup_image(keep, "keep"); });
        // Independent processes do not start in the same millisecond.
        const auto offset = std::chrono::milliseconds(rng() % 300);
        auto gc = std::async(std::launch::async, [&, offset] {
            std::this_thread::sleep_for(offset);
            return run({"prune", "--vm", "junk", "--keep-last", "1", "--grace", "0"});
        });
        const std::string id = kept.get();
        ASSERT_FALSE(id.empty()) << "round " << round;
        auto g = gc.get();
        ASSERT_EQ(g.exit_code, 0) << "round " << round << ": " << g.out << g.err;
        points.emplace_back(id, hash);
        ASSERT_LT(std::chrono::steady_clock::now() - start, std::chrono::minutes(12))
            << "50 rounds must stay bounded; reached round " << round;
    }
    auto check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    for (const auto& [id, hash] : points) EXPECT_EQ(restored_hash(id), hash) << "point " << id;
}

TEST_F(S3RepoTest, BackupsThroughAFaultyProxyCompleteCheckCleanAndLogRetries) {
    FaultProxy proxy(s3_endpoint(), dir, 0.10);
    ASSERT_TRUE(proxy.listening());
    const std::string via_proxy = bucket->location(proxy.endpoint());
    fs::path image = random_image(dir / "img.raw", 64 << 20, rng);
    std::vector<std::pair<std::string, std::string>> points;
    std::string stderr_all;
    for (int i = 0; i < 3; ++i) {
        if (i > 0) scribble(image, (rng() % 512) * 65536, 4 << 20, rng);
        auto r = run({"--json", "image", "backup", image.string(), "--name", "faulty"}, via_proxy);
        ASSERT_EQ(r.exit_code, 0) << "backup " << i << ": " << r.out << r.err;
        stderr_all += r.err;
        points.emplace_back(json::parse(r.out).value("id", ""), sha256_of_file(image));
    }
    auto check = run({"repo", "check", "--read-data"}, via_proxy);
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    stderr_all += check.err;
    for (const auto& [id, hash] : points) EXPECT_EQ(restored_hash(id, via_proxy), hash);
    ProxyStats s = proxy.stats();
    EXPECT_GT(s.slowdowns, 0);
    EXPECT_GT(s.resets, 0);
    EXPECT_GT(s.delays, 0);
    // Every 503 and every reset costs the client a retry, and each retry is logged.
    EXPECT_NE(stderr_all.find("retry"), std::string::npos) << stderr_all;
    // And the repository, read directly, is clean.
    auto direct = run({"repo", "check", "--read-data"});
    EXPECT_EQ(direct.exit_code, 0) << direct.out << direct.err;
}

TEST_F(S3RepoTest, RequestRateCapHoldsAtTheWire) {
    constexpr int kCap = 8;
    FaultProxy proxy(s3_endpoint(), dir, 0.0);
    ASSERT_TRUE(proxy.listening());
    const std::string via_proxy = bucket->location(proxy.endpoint());
    fs::path image = random_image(dir / "img.raw", 32 << 20, rng);
    const std::string cap = std::to_string(kCap);
    const auto t0 = std::chrono::steady_clock::now();
    auto b =
        run({"--s3-max-rps", cap, "--json", "image", "backup", image.string(), "--name", "capped"},
            via_proxy);
    ASSERT_EQ(b.exit_code, 0) << b.out << b.err;
    const std::string point = json::parse(b.out).value("id", "");
    auto c = run({"--s3-max-rps", cap, "repo", "check", "--read-data"}, via_proxy);
    ASSERT_EQ(c.exit_code, 0) << c.out << c.err;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<double> times = proxy.request_times();
    ASSERT_GE(times.size(), 3u * kCap) << "too few requests to measure a rate";
    // Each process has its own token bucket (a burst of up to `cap` requests at its start):
    // no 3-second window may exceed 3 s of tokens plus one burst per process.
    EXPECT_LE(busiest_window(times, 3.0), 3 * kCap + 2 * kCap) << times.size() << " requests";
    EXPECT_LE(static_cast<double>(times.size()), kCap * elapsed + 2 * kCap)
        << times.size() << " requests in " << elapsed << " s";
    EXPECT_EQ(restored_hash(point, via_proxy), sha256_of_file(image));
}

TEST_F(S3RepoTest, HttpsEndpointNeedsTheCaGivenWithCacert) {
    const std::string https = env_or_empty("VMSHADOW_TEST_S3_HTTPS_ENDPOINT");
    const std::string ca = env_or_empty("VMSHADOW_TEST_S3_CACERT");
    if (https.empty() || ca.empty()) GTEST_SKIP() << "the lab has no https endpoint (TLS=0)";
    const std::string location = bucket->location(https);
    fs::path image = random_image(dir / "img.raw", 4 << 20, rng);
    auto refused = run({"points"}, location);
    EXPECT_NE(refused.exit_code, 0) << refused.out;
    EXPECT_NE(refused.err.find("certificate"), std::string::npos) << refused.err;
    auto r = run({"--cacert", ca, "--json", "image", "backup", image.string(), "--name", "tls"},
                 location);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    auto p = run({"--cacert", ca, "image", "restore", json::parse(r.out).value("id", ""),
                  (dir / "out.raw").string()},
                 location);
    ASSERT_EQ(p.exit_code, 0) << p.err;
    EXPECT_EQ(sha256_of_file(dir / "out.raw"), sha256_of_file(image));
}

// A real guest: full then incremental backup into the bucket, the disk restored from the
// incremental point holds what the guest wrote before it, and the point boots (verify --boot
// serves it from the bucket through the nbdkit plugin, which opens the repository itself).
class S3VmBackupTest : public VmBackupTest {
  protected:
    void SetUp() override {
        if (s3_endpoint().empty())
            GTEST_SKIP() << "VMSHADOW_TEST_S3_ENDPOINT is not set (ceph-rgw.sh up)";
        VmBackupTest::SetUp();  // a local repository too, unused: the scratch, writers, state
        bucket = std::make_unique<TestBucket>(current_test_name());
        repo = bucket->location();
        auto init = run_vmshadow({"repo", "init", repo.string()});
        ASSERT_EQ(init.exit_code, 0) << init.out << init.err;
    }
    void TearDown() override {
        VmBackupTest::TearDown();
        bucket.reset();
    }
    std::unique_ptr<TestBucket> bucket;
};

TEST_F(S3VmBackupTest, VmFullThenIncrementalRestoresAndBootsFromTheBucket) {
    lab::LabGuest& g = boot({});
    ASSERT_TRUE(g.exec("echo first > /var/lib/lab/marker && sync"));
    json full = backup_ok({g.name()});
    EXPECT_EQ(mode_of(full, "vda"), "full") << full.dump();
    ASSERT_TRUE(g.exec("echo second > /var/lib/lab/marker && sync"));
    json incr = backup_ok({g.name()});
    EXPECT_EQ(mode_of(incr, "vda"), "incremental") << incr.dump();
    const std::string point = incr["point"];

    fs::path disk = restore_disk(point, "vda");
    EXPECT_EQ(file_on_image(disk, "/var/lib/lab/marker"), "second\n");
    fs::path older = restore_disk(full["point"], "vda");
    EXPECT_EQ(file_on_image(older, "/var/lib/lab/marker"), "first\n");

    auto verify = run({"verify", point, "--boot", "--exec", "grep -q second /var/lib/lab/marker",
                       "--timeout", "240", "--json"});
    ASSERT_EQ(verify.exit_code, 0) << verify.out << verify.err;
    EXPECT_TRUE(json::parse(verify.out)["ok"].get<bool>());
    auto check = run({"repo", "check", "--read-data"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

}  // namespace
}  // namespace vmshadow::testing
