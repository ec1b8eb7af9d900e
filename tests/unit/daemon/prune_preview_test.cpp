// SPDX-License-Identifier: MIT
// The dashboard's prune simulator (POST /repos/{name}/prune-preview) decides exactly what
// `vmshadow prune --dry-run --json` decides: both on one repository whose points were made at
// chosen times, for several rule sets.
#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>

#include "daemon/operations.h"
#include "unit/repo/repo_test_util.h"

namespace vmshadow::daemon {
namespace {

using nlohmann::json;

std::int64_t at(const char* iso) {
    std::tm tm{};
    strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm);
    return timegm(&tm);
}

// What the CLI prints, as JSON (its stdout).
json run_cli(const std::string& args) {
    std::string command = std::string(VMSHADOW_BINARY) + " " + args + " 2>/dev/null";
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
    if (!pipe) return nullptr;
    std::string out;
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe.get())) out.append(buffer, n);
    return json::parse(out, nullptr, false);
}

class PrunePreviewTest : public ::testing::Test {
  protected:
    void SetUp() override {
        spec_.name = "main";
        spec_.path = dir_.sub("repo");
        ASSERT_TRUE(repo::Repository::init(spec_.path.string(), {}));
        auto r = repo::test::open_plain(spec_.path.string());
        ASSERT_TRUE(r) << r.error().message();
        ManualClock clock{Clock::time_point{}};
        (*r)->set_clock(clock);
        // Years, months, weeks, days and hours apart; two VMs, never decided together.
        const char* web[] = {"2023-03-01T10:00:00", "2023-12-31T23:00:00", "2024-06-15T08:00:00",
                             "2025-01-01T00:30:00", "2025-11-03T02:00:00", "2025-11-03T14:00:00",
                             "2025-11-09T02:00:00", "2025-11-10T02:00:00", "2025-11-10T02:40:00",
                             "2025-11-10T03:10:00", "2025-12-01T02:00:00"};
        const char* db[] = {"2024-02-29T12:00:00", "2025-11-10T05:00:00"};
        std::uint32_t seed = 1;
        for (auto [vm, times] :
             {std::pair{"web", std::vector<const char*>(std::begin(web), std::end(web))},
              {"db", std::vector<const char*>(std::begin(db), std::end(db))}})
            for (const char* t : times) {
                clock.set(Clock::time_point(std::chrono::seconds(at(t))));
                auto p = repo::test::backup_bytes(**r, vm,
                                                  {{"vda", repo::test::random_data(4096, seed++)}});
                ASSERT_TRUE(p) << p.error().message();
                ASSERT_EQ(p->time, at(t)) << "the point's time is the repository clock's";
            }
    }
    repo::test::TempDir dir_;
    RepositorySpec spec_;
};

TEST_F(PrunePreviewTest, DecidesExactlyWhatPruneDryRunJsonDecides) {
    struct Case {
        Retention keep;
        std::string flags;
        std::string vm;
    };
    std::vector<Case> cases{
        {{.keep_last = 2}, "--keep-last 2", ""},
        {{.keep_hourly = 3}, "--keep-hourly 3", ""},
        {{.keep_daily = 4, .keep_weekly = 2}, "--keep-daily 4 --keep-weekly 2", ""},
        {{.keep_monthly = 3}, "--keep-monthly 3", "web"},
        {{.keep_yearly = 2}, "--keep-yearly 2", ""},
        {{.keep_last = 1, .keep_monthly = 1, .keep_yearly = 5},
         "--keep-last 1 --keep-monthly 1 --keep-yearly 5",
         "db"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.flags + (c.vm.empty() ? "" : " --vm " + c.vm));
        auto preview = prune_preview(spec_, c.vm, c.keep);
        ASSERT_TRUE(preview) << preview.error().message();
        json cli = run_cli("--repo " + spec_.path.string() + " --json prune --dry-run " + c.flags +
                           (c.vm.empty() ? "" : " --vm " + c.vm));
        ASSERT_TRUE(cli.is_object()) << cli;
        EXPECT_EQ(*preview, cli["points"]);
        std::size_t points = c.vm == "web" ? 11 : c.vm == "db" ? 2 : 13;
        EXPECT_EQ(preview->size(), points);
    }
}

TEST_F(PrunePreviewTest, YearlyKeepsTheNewestPointOfEachYear) {
    auto preview = prune_preview(spec_, "web", Retention{.keep_yearly = 2});
    ASSERT_TRUE(preview) << preview.error().message();
    std::vector<std::string> kept;
    for (const auto& p : *preview)
        if (p["keep"] == true)
            kept.push_back(p["time"].get<std::string>() + " " + p["reasons"][0].get<std::string>());
    EXPECT_EQ(kept, (std::vector<std::string>{"2025-12-01T02:00:00Z yearly 2025",
                                              "2024-06-15T08:00:00Z yearly 2024"}));
}

TEST_F(PrunePreviewTest, ChangesNothingAndNeedsARule) {
    auto before = repository_points(spec_, "");
    ASSERT_TRUE(before);
    ASSERT_TRUE(prune_preview(spec_, "", Retention{.keep_last = 1}));
    auto after = repository_points(spec_, "");
    ASSERT_TRUE(after);
    EXPECT_EQ(before->size(), after->size());
    auto none = prune_preview(spec_, "", Retention{});
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().kind(), ErrorKind::invalid_argument);
}

TEST_F(PrunePreviewTest, ForgetPointRemovesOnePointAndPointsCarryTheDashboardFields) {
    auto listed = repository_points(spec_, "db");
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 2u);
    const auto& newest = (*listed)[0];
    for (const char* key : {"freeze_ms", "duration_s", "verified", "bytes_added", "repository"})
        EXPECT_TRUE(newest.contains(key)) << key;
    EXPECT_TRUE(newest["verified"].is_null());
    auto forgotten = forget_point(spec_, "db@latest");
    ASSERT_TRUE(forgotten) << forgotten.error().message();
    EXPECT_EQ(*forgotten, newest["id"]);
    auto after = repository_points(spec_, "db");
    ASSERT_TRUE(after);
    ASSERT_EQ(after->size(), 1u);
    EXPECT_EQ((*after)[0]["id"], (*listed)[1]["id"]);
    {
        // Another holder of the exclusive lock (a gc): 409 locked, nothing forgotten.
        auto other = repo::test::open_plain(spec_.path.string());
        ASSERT_TRUE(other);
        auto lock = (*other)->lock(repo::LockMode::exclusive, "gc");
        ASSERT_TRUE(lock) << lock.error().message();
        auto refused = forget_point(spec_, "db@latest");
        ASSERT_FALSE(refused);
        EXPECT_EQ(refused.error().kind(), ErrorKind::locked) << refused.error().message();
    }
    auto missing = forget_point(spec_, "nosuchvm@latest");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().kind(), ErrorKind::not_found);
}

}  // namespace
}  // namespace vmshadow::daemon
