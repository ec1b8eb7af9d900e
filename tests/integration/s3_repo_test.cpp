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

// Another host's `repo unlock --remove-all` takes away the lock of a running operation: the
// holder notices at its next refresh (every 300 ms here), never writes the lock again, and
// stops with "lock was removed by another process, operation aborted" without publishing.
class S3LockLostTest : public S3RepoTest {
  protected:
    static constexpr std::string_view kRemovedWords =
        "lock was removed by another process, operation aborted";

    // `vmshadow ARGS...` in the background, refreshing its lock every 300 ms.
    std::future<lab::ProcessOutput> start_holder(std::vector<std::string> args,
                                                 std::vector<std::string> environment = {}) {
        std::vector<std::string> argv{"env", "VMSHADOW_TEST_LOCK_REFRESH_MS=300"};
        argv.insert(argv.end(), environment.begin(), environment.end());
        argv.insert(argv.end(), {"timeout", "-k", "10", std::to_string(kSecondsPerCommand),
                                 VMSHADOW_BINARY, "--repo", repo});
        argv.insert(argv.end(), args.begin(), args.end());
        return std::async(std::launch::async, [argv] {
            auto r = lab::run_process(argv);
            return r ? *r : lab::ProcessOutput{-1, "", r.error().message()};
        });
    }
    // The locks `repo unlock` keeps (their holders run), as its --json output lists them.
    json kept_locks() {
        auto r = vmshadow_bounded({"--repo", repo, "--json", "repo", "unlock"});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        auto j = json::parse(r.out, nullptr, false);
        return j.is_discarded() ? json::array() : j.value("kept", json::array());
    }
    // Waits (up to 60 s) until the holder's lock is there in `exclusive` mode, then removes
    // every lock as another host would; returns whether it removed one.
    bool remove_the_lock_of(const std::string& operation, bool exclusive,
                            std::future<lab::ProcessOutput>& holder) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        for (;;) {
            for (const auto& l : kept_locks())
                if (l.value("operation", "").starts_with(operation) &&
                    l.value("exclusive", !exclusive) == exclusive) {
                    auto r = vmshadow_bounded({"--repo", repo, "repo", "unlock", "--remove-all"});
                    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
                    return r.exit_code == 0;
                }
            if (std::chrono::steady_clock::now() > deadline ||
                holder.wait_for(std::chrono::milliseconds(200)) == std::future_status::ready)
                return false;
        }
    }
};

TEST_F(S3LockLostTest, ABackupWhoseLockAnotherHostRemovesStopsAndPublishesNothing) {
    // 48 MiB at 2 MiB/s: the backup runs for half a minute unless it stops.
    fs::path image = random_image(dir / "img.raw", 48 << 20, rng);
    auto holder = start_holder(
        {"--s3-max-bandwidth", "2M", "image", "backup", image.string(), "--name", "long"});
    // Once it holds the shared lock (its cleanup under the exclusive one is over).
    ASSERT_TRUE(remove_the_lock_of("image backup", false, holder)) << holder.get().err;
    const auto removed_at = std::chrono::steady_clock::now();
    // Six refreshes later the lock is still gone: the holder did not write it again.
    std::this_thread::sleep_for(std::chrono::milliseconds(1800));
    EXPECT_TRUE(kept_locks().empty()) << kept_locks().dump();
    auto r = holder.get();
    EXPECT_EQ(r.exit_code, 7) << r.out << r.err;  // locked
    EXPECT_NE(r.err.find(kRemovedWords), std::string::npos) << r.err;
    EXPECT_LT(std::chrono::steady_clock::now() - removed_at, std::chrono::seconds(60))
        << "the backup did not stop";
    auto points = run({"--json", "points"});
    ASSERT_EQ(points.exit_code, 0) << points.err;
    EXPECT_EQ(json::parse(points.out, nullptr, false), json::array()) << points.out;
    auto check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST_F(S3LockLostTest, GcWhoseLockAnotherHostRemovesStopsAndDeletesNothing) {
    fs::path image = random_image(dir / "img.raw", 4 << 20, rng);
    const std::string kept = backup_image(image, "keep");
    ASSERT_FALSE(kept.empty());
    const std::string doomed = backup_image(random_image(dir / "junk.raw", 4 << 20, rng), "junk");
    ASSERT_FALSE(doomed.empty());
    auto forget = run({"forget", doomed});
    ASSERT_EQ(forget.exit_code, 0) << forget.err;
    // gc pauses 4 s at its mark phase, holding its exclusive lock: the lock goes meanwhile.
    auto holder = start_holder({"gc", "--grace", "0"},
                               {"VMSHADOW_TEST_PAUSE_AT=gc-mark", "VMSHADOW_TEST_PAUSE_MS=4000"});
    ASSERT_TRUE(remove_the_lock_of("gc", true, holder)) << holder.get().err;
    auto r = holder.get();
    EXPECT_EQ(r.exit_code, 7) << r.out << r.err;
    EXPECT_NE(r.err.find(kRemovedWords), std::string::npos) << r.err;
    // Nothing was deleted: the forgotten point's data waits for the next gc, which frees it.
    auto check = run({"--json", "repo", "check"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    auto gc = run({"--json", "gc", "--grace", "0"});
    ASSERT_EQ(gc.exit_code, 0) << gc.out << gc.err;
    EXPECT_GT(json::parse(gc.out, nullptr, false).value("packs_removed", 0), 0) << gc.out;
    EXPECT_EQ(restored_hash(kept), sha256_of_file(image));
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
