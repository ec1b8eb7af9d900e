// SPDX-License-Identifier: MIT
#include "daemon/job_config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace vmshadow::daemon {
namespace {

// A config using every setting, with values other than the defaults where it can.
constexpr std::string_view kRich = R"([daemon]
listen = "[::1]:9443"
connect-uri = "qemu:///system"
scratch-dir = "/srv/scratch"
max-concurrent-backups = 2
max-concurrent-tasks = 8
api-threads = 16
keep-tasks = 5000
keep-task-days = 90

[repository.main]
path = "/var/lib/vmshadow/repo"
password-file = "/etc/vmshadow/repo.pass"

[repository.offsite-2]
path = "/mnt/offsite/repo"

[alerts]
webhook = "https://hooks.example/x?token=1"
webhook-sha256 = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
email = "ops@example.com"
sendmail = "/usr/lib/sendmail"

[job.zz-nightly]
kind = "backup"
vms = ["web*", "db1", "name with \"quotes\" and é"]
repository = "main"
schedule = "Mon..Fri 22:00"
method = "application"
group = true
keep-last = 3
keep-daily = 7
keep-monthly = 100000
catch-up = "all"
notify = "always"
alert-after-hours = 26
enabled = false

[job.verify_1]
kind = "verify"
vms = ["*"]
repository = "offsite-2"
boot = false
after = "zz-nightly"
catch-up = "none"
notify = "never"

[job.prune]
kind = "prune"
repository = "main"
keep-weekly = 4
keep-monthly = 12
keep-hourly = 1
gc = false
after = "verify_1"

[job.check]
kind = "check"
repository = "main"
schedule = "daily"
read-data-percent = 100
)";

constexpr std::string_view kBase = R"([repository.main]
path = "/r"
)";

std::string message_of(std::string_view text) {
    auto result = parse_config(text, "vmshadowd.toml");
    if (result) return "(parsed)";
    EXPECT_EQ(result.error().kind(), ErrorKind::invalid_argument);
    return result.error().message();
}

// The error of a config that adds `job_lines` to a [job.j] with a valid repository.
std::string job_error(std::string_view job_lines) {
    return message_of(std::string(kBase) + "\n[job.j]\nrepository = \"main\"\n" +
                      std::string(job_lines) + "\n");
}

// Lines: 1 [repository.main], 2 path, 3 blank, 4 [job.j], 5 repository, 6 = first job line.
#define EXPECT_PREFIX(message, prefix) EXPECT_TRUE((message).starts_with(prefix)) << (message)

TEST(JobConfig, RichConfigParsesWithEveryValue) {
    auto c = parse_config(kRich, "vmshadowd.toml");
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->daemon.listen, "[::1]:9443");
    EXPECT_EQ(c->daemon.max_concurrent_backups, 2u);
    EXPECT_EQ(c->daemon.api_threads, 16u);
    EXPECT_EQ(c->repositories.at("main").password_file, "/etc/vmshadow/repo.pass");
    EXPECT_EQ(c->repositories.at("offsite-2").name, "offsite-2");
    EXPECT_EQ(c->alerts.sendmail, "/usr/lib/sendmail");
    ASSERT_EQ(c->jobs.size(), 4u);
    // File order, not alphabetical.
    EXPECT_EQ(c->jobs[0].id, "zz-nightly");
    EXPECT_EQ(c->jobs[1].id, "verify_1");
    EXPECT_EQ(c->jobs[2].id, "prune");
    EXPECT_EQ(c->jobs[3].id, "check");
    const JobSpec& n = c->jobs[0];
    EXPECT_EQ(n.vms.size(), 3u);
    EXPECT_EQ(n.method, "application");
    EXPECT_TRUE(n.group);
    EXPECT_EQ(n.retention.keep_daily, 7u);
    EXPECT_EQ(n.retention.keep_monthly, 100000u);
    EXPECT_FALSE(n.retention.keep_weekly);
    EXPECT_EQ(n.catch_up, CatchUp::all);
    EXPECT_EQ(n.notify, Notify::always);
    EXPECT_EQ(n.alert_after_hours, 26u);
    EXPECT_FALSE(n.enabled);
    EXPECT_EQ(c->jobs[1].after, "zz-nightly");
    EXPECT_FALSE(c->jobs[1].boot);
    EXPECT_FALSE(c->jobs[2].gc);
    EXPECT_EQ(c->jobs[3].read_data_percent, 100u);
    EXPECT_TRUE(validate_config(*c));
}

TEST(JobConfig, RenderParsesBackEqual) {
    auto c = parse_config(kRich, "vmshadowd.toml");
    ASSERT_TRUE(c) << c.error().message();
    std::string text = render_config(*c);
    auto back = parse_config(text, "rendered.toml");
    ASSERT_TRUE(back) << back.error().message() << "\n" << text;
    EXPECT_EQ(*back, *c) << text;
    EXPECT_EQ(render_config(*back), text);
}

TEST(JobConfig, DefaultsRenderAndParseBackEqual) {
    DaemonConfig empty;
    auto back = parse_config(render_config(empty), "x.toml");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, empty);
    auto parsed_empty = parse_config("", "x.toml");
    ASSERT_TRUE(parsed_empty);
    EXPECT_EQ(*parsed_empty, empty);
}

TEST(JobConfig, DigestIsSha256Hex) {
    EXPECT_EQ(config_digest(""),
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(config_digest("abc"),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

struct TempFile {
    std::filesystem::path dir;
    TempFile() {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "vmshadow-config-XXXXXX").string();
        dir = ::mkdtemp(tmpl.data());
    }
    ~TempFile() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
};

TEST(JobConfig, LoadMissingFileIsEmptyConfigWithDigestOfNothing) {
    TempFile t;
    auto loaded = load_config(t.dir / "absent.toml");
    ASSERT_TRUE(loaded) << loaded.error().message();
    EXPECT_EQ(loaded->config, DaemonConfig{});
    EXPECT_EQ(loaded->digest, config_digest(""));
}

TEST(JobConfig, LoadReadsFileAndDigestsItsBytes) {
    TempFile t;
    auto path = t.dir / "vmshadowd.toml";
    std::ofstream(path) << kRich;
    auto loaded = load_config(path);
    ASSERT_TRUE(loaded) << loaded.error().message();
    EXPECT_EQ(loaded->config.jobs.size(), 4u);
    EXPECT_EQ(loaded->digest, config_digest(kRich));
}

TEST(JobConfig, LoadErrorNamesThePath) {
    TempFile t;
    auto path = t.dir / "bad.toml";
    std::ofstream(path) << "[daemon]\napi-threads = 0\n";
    auto loaded = load_config(path);
    ASSERT_FALSE(loaded);
    EXPECT_PREFIX(loaded.error().message(), path.string() + ":2: daemon.api-threads: ");
}

TEST(JobConfig, LoadOfADirectoryIsAnError) {
    TempFile t;
    auto loaded = load_config(t.dir);
    ASSERT_FALSE(loaded);
    EXPECT_NE(loaded.error().message().find("not a regular file"), std::string::npos);
}

TEST(JobConfig, LoadOfAHugeFileIsRefusedUnread) {
    TempFile t;
    auto path = t.dir / "huge.toml";
    std::ofstream(path).close();
    std::filesystem::resize_file(path, 64 << 20);  // sparse: no disk used
    auto loaded = load_config(path);
    ASSERT_FALSE(loaded);
    EXPECT_NE(loaded.error().message().find("more than a config"), std::string::npos)
        << loaded.error().message();
}

TEST(JobConfig, TomlSyntaxErrorNamesFileAndLine) {
    auto m = message_of("[daemon]\nlisten = \n");
    EXPECT_PREFIX(m, "vmshadowd.toml:2: ");
}

TEST(JobConfig, WrongTypeNamesFileLineAndKey) {
    EXPECT_PREFIX(job_error("keep-daily = \"7\""), "vmshadowd.toml:6: job.j.keep-daily: ");
    EXPECT_NE(job_error("keep-daily = \"7\"").find("expected an integer, got a string"),
              std::string::npos);
    EXPECT_PREFIX(job_error("vms = \"web1\""), "vmshadowd.toml:6: job.j.vms: expected an array");
    EXPECT_PREFIX(job_error("vms = [\"a\", 1]"), "vmshadowd.toml:6: job.j.vms: ");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nenabled = \"yes\""),
                  "vmshadowd.toml:7: job.j.enabled: expected true or false");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nschedule = 2026-01-01"),
                  "vmshadowd.toml:7: job.j.schedule: ");
    EXPECT_PREFIX(message_of("daemon = 3\n"), "vmshadowd.toml:1: daemon: expected a table");
    EXPECT_PREFIX(message_of("[job]\nx = 1\n"), "vmshadowd.toml:2: job.x: expected a table");
    EXPECT_PREFIX(message_of("[repository]\nr = \"/x\"\n"),
                  "vmshadowd.toml:2: repository.r: expected a table");
}

TEST(JobConfig, OutOfRangeNamesFileLineAndKey) {
    EXPECT_PREFIX(message_of("[daemon]\nmax-concurrent-backups = 0\n"),
                  "vmshadowd.toml:2: daemon.max-concurrent-backups: 0 is out of range 1..64");
    EXPECT_PREFIX(message_of("[daemon]\nmax-concurrent-backups = 65\n"),
                  "vmshadowd.toml:2: daemon.max-concurrent-backups: ");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nkeep-daily = 1000001"),
                  "vmshadowd.toml:7: job.j.keep-daily: 1000001 is out of range 1..1000000");
    EXPECT_PREFIX(job_error("kind = \"check\"\nread-data-percent = 101"),
                  "vmshadowd.toml:7: job.j.read-data-percent: ");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nalert-after-hours = 87601"),
                  "vmshadowd.toml:7: job.j.alert-after-hours: ");
}

TEST(JobConfig, NegativeNumbersAreOutOfRange) {
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nkeep-last = -1"),
                  "vmshadowd.toml:7: job.j.keep-last: -1 is out of range");
    EXPECT_PREFIX(message_of("[daemon]\nkeep-tasks = -5\n"),
                  "vmshadowd.toml:2: daemon.keep-tasks: ");
    EXPECT_PREFIX(job_error("kind = \"check\"\nread-data-percent = -1"),
                  "vmshadowd.toml:7: job.j.read-data-percent: ");
}

TEST(JobConfig, HugeNumbersAreOutOfRangeNotWrapped) {
    // 2^32 + 1 would wrap to 1 as an unsigned; int64 overflow saturates in toml11.
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nkeep-last = 4294967297"),
                  "vmshadowd.toml:7: job.j.keep-last: ");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nkeep-last = 99999999999999999999999"),
                  "vmshadowd.toml:7: job.j.keep-last: ");
    EXPECT_PREFIX(message_of("[daemon]\napi-threads = -99999999999999999999\n"),
                  "vmshadowd.toml:2: daemon.api-threads: ");
}

TEST(JobConfig, HugeNumbersSayTooLargeOrSmall) {
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nkeep-last = 99999999999999999999999"),
                  "vmshadowd.toml:7: job.j.keep-last: too large: the range is 1..1000000");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nkeep-last = -99999999999999999999999"),
                  "vmshadowd.toml:7: job.j.keep-last: too small: the range is 1..1000000");
}

TEST(JobConfig, InvalidUtf8IsRefusedAndNeverEchoed) {
    // toml11 refuses it in the file; the message (which the API sends as JSON) stays UTF-8.
    for (std::string bad : {job_error("vms = [\"a\xff\"]"), job_error("\"k\xff\" = 1"),
                            message_of("[alerts]\nemail = \"\xc3@x\"\n")}) {
        EXPECT_TRUE(bad.starts_with("vmshadowd.toml:6: ") || bad.starts_with("vmshadowd.toml:2: "))
            << bad;
        EXPECT_NO_THROW((void)nlohmann::json(bad).dump()) << bad;
    }
    // A config or job built in memory is checked too.
    auto c = *parse_config(kRich, "x");
    c.jobs[0].vms = {"a\xff"};
    auto s = validate_config(c);
    ASSERT_FALSE(s);
    EXPECT_PREFIX(s.error().message(), "job.zz-nightly.vms: is not valid UTF-8");
    auto j = job_to_json(*parse_config(kRich, "x")->job("check"));
    j["kind"] = "b\xfe";
    auto r = job_from_json(j);
    ASSERT_FALSE(r);
    EXPECT_PREFIX(r.error().message(), "job.kind: ");
    EXPECT_NO_THROW((void)nlohmann::json(r.error().message()).dump());
}

TEST(JobConfig, FloatsWhereIntegersBelongAreRefused) {
    for (std::string_view value : {"nan", "inf", "-inf", "+nan", "7.0", "1e400"}) {
        auto m = job_error("vms = [\"a\"]\nkeep-daily = " + std::string(value));
        EXPECT_PREFIX(m, "vmshadowd.toml:7: job.j.keep-daily: expected an integer, got a float");
    }
    EXPECT_NE(job_error("vms = [\"a\"]\nkeep-daily = nan").find("(nan)"), std::string::npos);
    EXPECT_PREFIX(message_of("[daemon]\napi-threads = inf\n"),
                  "vmshadowd.toml:2: daemon.api-threads: expected an integer, got a float (inf)");
}

TEST(JobConfig, UnknownKeysAreRefusedEverywhere) {
    auto m = job_error("vms = [\"a\"]\nkeep-dialy = 7");
    EXPECT_PREFIX(m, "vmshadowd.toml:7: job.j.keep-dialy: unknown key (did you mean keep-daily?)");
    EXPECT_PREFIX(message_of("[daemon]\nlisten = \"\"\nthreads = 2\n"),
                  "vmshadowd.toml:3: daemon.threads: unknown key");
    EXPECT_PREFIX(message_of("[alerts]\nwebhok = \"http://x\"\n"),
                  "vmshadowd.toml:2: alerts.webhok: unknown key (did you mean webhook?)");
    EXPECT_PREFIX(message_of("[repository.r]\npath = \"/r\"\npasword-file = \"/p\"\n"),
                  "vmshadowd.toml:3: repository.r.pasword-file: unknown key");
    EXPECT_PREFIX(message_of("[jobs.nightly]\nkind = \"backup\"\n"),
                  "vmshadowd.toml:1: jobs: unknown key (did you mean job?)");
    EXPECT_PREFIX(message_of("verbose = true\n"), "vmshadowd.toml:1: verbose: unknown key");
}

TEST(JobConfig, KeepYearlyIsAcceptedCheckedAndKeptThroughTomlAndJson) {
    // vmshadow prune has a yearly rule: a job takes it as it takes the others.
    auto c = parse_config(std::string(kBase) +
                              "\n[job.j]\nrepository = \"main\"\nkind = \"prune\"\n"
                              "keep-yearly = 5\n",
                          "vmshadowd.toml");
    ASSERT_TRUE(c) << c.error().message();
    ASSERT_TRUE(c->job("j"));
    EXPECT_EQ(c->job("j")->retention.keep_yearly, 5u);
    EXPECT_FALSE(c->job("j")->retention.empty());
    EXPECT_TRUE(validate_config(*c));
    auto again = parse_config(render_config(*c), "x");
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(again->job("j")->retention.keep_yearly, 5u);
    auto j = job_to_json(*c->job("j"));
    EXPECT_EQ(j["keep_yearly"], 5);
    auto back = job_from_json(j);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->retention.keep_yearly, 5u);
    EXPECT_PREFIX(job_error("kind = \"prune\"\nkeep-yearly = 0"),
                  "vmshadowd.toml:7: job.j.keep-yearly: 0 is out of range");
}

TEST(JobConfig, KeyOfAnotherKindIsRefused) {
    EXPECT_PREFIX(job_error("kind = \"prune\"\nkeep-last = 1\nmethod = \"image\""),
                  "vmshadowd.toml:8: job.j.method: not a setting of a prune job");
    EXPECT_PREFIX(job_error("kind = \"check\"\nvms = [\"a\"]"),
                  "vmshadowd.toml:7: job.j.vms: not a setting of a check job");
}

TEST(JobConfig, UnknownEnumValueListsTheValid) {
    EXPECT_PREFIX(job_error("kind = \"bakup\""),
                  "vmshadowd.toml:6: job.j.kind: \"bakup\" is not one of backup, verify, prune, "
                  "check");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nmethod = \"snapshot\""),
                  "vmshadowd.toml:7: job.j.method: \"snapshot\" is not one of auto, application");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\ncatch-up = \"two\""),
                  "vmshadowd.toml:7: job.j.catch-up: \"two\" is not one of one, all, none");
    EXPECT_PREFIX(
        job_error("vms = [\"a\"]\nnotify = \"Always\""),
        "vmshadowd.toml:7: job.j.notify: \"Always\" is not one of always, failure, never");
}

TEST(JobConfig, BadNamesAreRefused) {
    for (std::string_view id : {"Nightly", "-x", "_x", "a.b", "a b", "é"}) {
        auto m = message_of(std::string(kBase) + "[job.\"" + std::string(id) +
                            "\"]\nrepository = \"main\"\nvms = [\"a\"]\n");
        EXPECT_PREFIX(m, "vmshadowd.toml:3: job." + std::string(id) + ": invalid job name");
    }
    std::string long_id(64, 'a');
    EXPECT_PREFIX(message_of(std::string(kBase) + "[job." + long_id +
                             "]\nrepository = \"main\"\nvms = [\"a\"]\n"),
                  "vmshadowd.toml:3: job." + long_id + ": invalid job name");
    EXPECT_TRUE(parse_config(std::string(kBase) + "[job." + std::string(63, 'a') +
                                 "]\nrepository = \"main\"\nvms = [\"a\"]\n",
                             "x"));
    EXPECT_PREFIX(message_of("[repository.Main]\npath = \"/r\"\n"),
                  "vmshadowd.toml:1: repository.Main: invalid repository name");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nafter = \"No Such\""),
                  "vmshadowd.toml:7: job.j.after: invalid job name");
}

TEST(JobConfig, MissingRepositoryIsRefused) {
    auto m =
        message_of(std::string(kBase) + "\n[job.j]\nrepository = \"offsite\"\nvms = [\"a\"]\n");
    EXPECT_PREFIX(m, "vmshadowd.toml:5: job.j.repository: no repository \"offsite\"");
    EXPECT_PREFIX(message_of(std::string(kBase) + "\n[job.j]\nvms = [\"a\"]\n"),
                  "vmshadowd.toml:4: job.j.repository: missing");
}

TEST(JobConfig, AfterMustNameAnExistingJobWithoutCycle) {
    std::string jobs = std::string(kBase) +
                       "[job.a]\nrepository = \"main\"\nvms = [\"a\"]\nafter = \"c\"\n"   // 3..6
                       "[job.b]\nrepository = \"main\"\nvms = [\"a\"]\nafter = \"a\"\n"   // 7..10
                       "[job.c]\nrepository = \"main\"\nvms = [\"a\"]\nafter = \"b\"\n";  // 11..
    EXPECT_PREFIX(message_of(jobs), "vmshadowd.toml:6: job.a.after: a cycle: a -> c -> b -> a");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nafter = \"j\""),
                  "vmshadowd.toml:7: job.j.after: a job cannot run after itself");
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nafter = \"ghost\""),
                  "vmshadowd.toml:7: job.j.after: no job \"ghost\"");
}

TEST(JobConfig, DuplicateJobIsRefused) {
    auto m = message_of(std::string(kBase) +
                        "[job.a]\nrepository = \"main\"\nvms = [\"a\"]\n"
                        "[job.a]\nrepository = \"main\"\nvms = [\"b\"]\n");
    EXPECT_PREFIX(m, "vmshadowd.toml:6: ");
    EXPECT_NE(m.find("job.a"), std::string::npos) << m;
    DaemonConfig c =
        *parse_config(std::string(kBase) + "[job.a]\nrepository = \"main\"\nvms = [\"a\"]\n", "x");
    c.jobs.push_back(c.jobs[0]);
    auto s = validate_config(c);
    ASSERT_FALSE(s);
    EXPECT_PREFIX(s.error().message(), "job.a: a second job with this id");
}

TEST(JobConfig, BadScheduleNamesTheKey) {
    EXPECT_PREFIX(job_error("vms = [\"a\"]\nschedule = \"bogus 25:00\""),
                  "vmshadowd.toml:7: job.j.schedule: ");
}

TEST(JobConfig, OtherBadValuesAreRefused) {
    EXPECT_PREFIX(job_error("kind = \"backup\""), "vmshadowd.toml:4: job.j.vms: missing");
    EXPECT_PREFIX(job_error("vms = []"), "vmshadowd.toml:6: job.j.vms: missing");
    EXPECT_PREFIX(job_error("vms = [\"\"]"), "vmshadowd.toml:6: job.j.vms: an empty VM name");
    EXPECT_PREFIX(job_error("vms = [\"a\\nb\"]"),
                  "vmshadowd.toml:6: job.j.vms: contains a control");
    EXPECT_PREFIX(job_error("kind = \"prune\""),
                  "vmshadowd.toml:4: job.j: a prune job needs at least one keep-* setting");
    EXPECT_PREFIX(message_of("[daemon]\nlisten = \"localhost\"\n"),
                  "vmshadowd.toml:2: daemon.listen: ");
    EXPECT_PREFIX(message_of("[daemon]\nlisten = \"h:70000\"\n"),
                  "vmshadowd.toml:2: daemon.listen: ");
    EXPECT_TRUE(parse_config("[daemon]\nlisten = \"127.0.0.1:0\"\n", "x"));  // any free port
    EXPECT_PREFIX(message_of("[daemon]\nscratch-dir = \"tmp\"\n"),
                  "vmshadowd.toml:2: daemon.scratch-dir: \"tmp\" is not an absolute path");
    EXPECT_PREFIX(message_of("[repository.r]\npath = \"rel/dir\"\n"),
                  "vmshadowd.toml:2: repository.r.path: ");
    EXPECT_PREFIX(message_of("[repository.r]\npassword-file = \"/p\"\n"),
                  "vmshadowd.toml:1: repository.r.path: missing");
    EXPECT_PREFIX(message_of("[alerts]\nwebhook = \"ftp://x\"\n"),
                  "vmshadowd.toml:2: alerts.webhook: ");
    EXPECT_PREFIX(message_of("[alerts]\nemail = \"a@b\\r\\nBcc: x@y\"\n"),
                  "vmshadowd.toml:2: alerts.email: ");
    EXPECT_PREFIX(message_of("[alerts]\nemail = \"a@b, c@d\"\n"),
                  "vmshadowd.toml:2: alerts.email: ");
    EXPECT_PREFIX(message_of("[alerts]\nwebhook-sha256 = \"abc\"\n"),
                  "vmshadowd.toml:2: alerts.webhook-sha256: ");
}

TEST(JobConfig, ValidateNamesKeyWithoutFile) {
    auto c = *parse_config(kRich, "x");
    c.jobs[0].retention.keep_daily = 0;
    auto s = validate_config(c);
    ASSERT_FALSE(s);
    EXPECT_PREFIX(s.error().message(), "job.zz-nightly.keep-daily: 0 is out of range");
    c = *parse_config(kRich, "x");
    c.jobs[3].method = "image";  // a check job takes no method
    s = validate_config(c);
    ASSERT_FALSE(s);
    EXPECT_PREFIX(s.error().message(), "job.check.method: not a setting of a check job");
    c = *parse_config(kRich, "x");
    c.repositories.erase("offsite-2");
    s = validate_config(c);
    ASSERT_FALSE(s);
    EXPECT_PREFIX(s.error().message(), "job.verify_1.repository: no repository");
}

TEST(JobConfig, JobJsonRoundTrips) {
    auto c = *parse_config(kRich, "x");
    for (const auto& job : c.jobs) {
        auto back = job_from_json(job_to_json(job));
        ASSERT_TRUE(back) << back.error().message();
        EXPECT_EQ(*back, job);
    }
    auto j = job_to_json(c.jobs[0]);
    EXPECT_EQ(j["keep_daily"], 7);
    EXPECT_EQ(j["catch_up"], "all");
    EXPECT_FALSE(j.contains("keep_weekly"));
}

TEST(JobConfig, JobJsonErrorsNameTheField) {
    auto c = *parse_config(kRich, "x");
    auto message = [&](auto edit) {
        auto j = job_to_json(c.jobs[0]);
        edit(j);
        auto r = job_from_json(j);
        return r ? std::string("(parsed)") : r.error().message();
    };
    EXPECT_PREFIX(message([](auto& j) { j["keep-daily"] = 3; }),
                  "job.keep-daily: unknown key (did you mean keep_daily?)");
    EXPECT_PREFIX(message([](auto& j) { j["keep_daily"] = -1; }), "job.keep_daily: -1 is out of");
    EXPECT_PREFIX(message([](auto& j) { j["keep_daily"] = 0; }), "job.keep_daily: 0 is out of");
    EXPECT_PREFIX(message([](auto& j) { j["keep_daily"] = 18446744073709551615u; }),
                  "job.keep_daily: ");
    EXPECT_PREFIX(message([](auto& j) { j["keep_daily"] = 7.5; }),
                  "job.keep_daily: expected an integer, got a float");
    EXPECT_PREFIX(message([](auto& j) { j["keep_daily"] = std::nan(""); }),
                  "job.keep_daily: expected an integer, got a float (nan)");
    EXPECT_PREFIX(message([](auto& j) { j["kind"] = "restore"; }), "job.kind: \"restore\" is not");
    EXPECT_PREFIX(message([](auto& j) { j["id"] = "Bad Id"; }), "job.id: invalid job name");
    EXPECT_PREFIX(message([](auto& j) { j.erase("id"); }), "job.id: missing");
    EXPECT_PREFIX(message([](auto& j) { j["schedule"] = "bogus"; }), "job.schedule: ");
    EXPECT_PREFIX(message([](auto& j) { j["vms"] = nlohmann::json::object(); }),
                  "job.vms: expected an array of strings, got an object");
    EXPECT_PREFIX(message([](auto& j) { j["enabled"] = nullptr; }), "job.enabled: expected true");
    auto not_object = job_from_json(nlohmann::json::array());
    ASSERT_FALSE(not_object);
    EXPECT_PREFIX(not_object.error().message(), "job: expected an object");
}

}  // namespace
}  // namespace vmshadow::daemon

namespace vmshadow::daemon {
namespace {

constexpr std::string_view kReplica = R"([replica]
certificate = "/etc/vmshadow/replica/host.crt"
key = "/etc/vmshadow/replica/host.key"
ca = "/etc/vmshadow/replica/ca.crt"
listen = "127.0.0.2:8471"
endpoint = "hostb.example:8471"

[[replica.allow]]
subject = "CN=hosta"
storage = "/var/lib/vmshadow/replicas"

[[replica.allow]]
subject = "CN=hostc,O=Example"
storage = "/srv/replicas/c"
)";

std::string replica_error(std::string_view text) {
    auto result = parse_config(text, "vmshadowd.toml");
    if (result) return "(parsed)";
    EXPECT_EQ(result.error().kind(), ErrorKind::invalid_argument);
    return result.error().message();
}

TEST(JobConfigReplica, ReplicaSectionParsesWithItsAllowList) {
    auto c = parse_config(kReplica, "vmshadowd.toml");
    ASSERT_TRUE(c) << c.error().message();
    ASSERT_TRUE(c->replica);
    EXPECT_EQ(c->replica->certificate, "/etc/vmshadow/replica/host.crt");
    EXPECT_EQ(c->replica->ca, "/etc/vmshadow/replica/ca.crt");
    EXPECT_EQ(c->replica->listen, "127.0.0.2:8471");
    EXPECT_EQ(c->replica->own_endpoint(), "hostb.example:8471");
    ASSERT_EQ(c->replica->allow.size(), 2u);
    EXPECT_EQ(c->replica->allow[1].subject, "CN=hostc,O=Example");
    EXPECT_EQ(c->replica->allow[1].storage, "/srv/replicas/c");
    EXPECT_TRUE(validate_config(*c));
}

TEST(JobConfigReplica, NoReplicaSectionMeansReplicaIsOff) {
    auto c = parse_config("[daemon]\nlisten = \"\"\n", "vmshadowd.toml");
    ASSERT_TRUE(c);
    EXPECT_FALSE(c->replica);
}

TEST(JobConfigReplica, EndpointDefaultsToListen) {
    auto c = parse_config(
        "[replica]\ncertificate = \"/c\"\nkey = \"/k\"\nca = \"/a\"\nlisten = \"127.0.0.2:0\"\n",
        "vmshadowd.toml");
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->replica->own_endpoint(), "127.0.0.2:0");
}

TEST(JobConfigReplica, PrimaryOnlyHostNeedsNoListener) {
    auto c = parse_config("[replica]\ncertificate = \"/c\"\nkey = \"/k\"\nca = \"/a\"\n",
                          "vmshadowd.toml");
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_TRUE(c->replica->listen.empty());
    EXPECT_TRUE(c->replica->own_endpoint().empty());
}

TEST(JobConfigReplica, RenderedReplicaSectionParsesBackEqual) {
    auto c = parse_config(kReplica, "vmshadowd.toml");
    ASSERT_TRUE(c);
    auto again = parse_config(render_config(*c), "rendered.toml");
    ASSERT_TRUE(again) << again.error().message() << "\n" << render_config(*c);
    EXPECT_EQ(*again, *c);
}

TEST(JobConfigReplica, MissingIdentityFilesAreNamed) {
    EXPECT_PREFIX(replica_error("[replica]\nkey = \"/k\"\nca = \"/a\"\n"),
                  "vmshadowd.toml:1: replica.certificate: missing");
    EXPECT_PREFIX(replica_error("[replica]\ncertificate = \"/c\"\nca = \"/a\"\n"),
                  "vmshadowd.toml:1: replica.key: missing");
    EXPECT_PREFIX(replica_error("[replica]\ncertificate = \"/c\"\nkey = \"/k\"\n"),
                  "vmshadowd.toml:1: replica.ca: missing");
    EXPECT_PREFIX(replica_error("[replica]\ncertificate = \"c.crt\"\nkey = \"/k\"\nca = \"/a\"\n"),
                  "vmshadowd.toml:2: replica.certificate: \"c.crt\" is not an absolute path");
}

TEST(JobConfigReplica, TyposInTheReplicaSectionSuggestTheKey) {
    EXPECT_PREFIX(replica_error("[replica]\ncertificate = \"/c\"\nkey = \"/k\"\nca = \"/a\"\n"
                                "lisen = \"127.0.0.2:8471\"\n"),
                  "vmshadowd.toml:5: replica.lisen: unknown key (did you mean listen?)");
    EXPECT_PREFIX(replica_error("[replica]\ncertificate = \"/c\"\nkey = \"/k\"\nca = \"/a\"\n"
                                "listen = \"127.0.0.2:8471\"\n\n[[replica.allow]]\n"
                                "subject = \"CN=a\"\nstorge = \"/s\"\n"),
                  "vmshadowd.toml:9: replica.allow[0].storge: unknown key (did you mean storage?)");
}

TEST(JobConfigReplica, BadListenAndAllowEntriesAreRefused) {
    const std::string head = "[replica]\ncertificate = \"/c\"\nkey = \"/k\"\nca = \"/a\"\n";
    EXPECT_PREFIX(replica_error(head + "listen = \"127.0.0.2\"\n"),
                  "vmshadowd.toml:5: replica.listen: \"127.0.0.2\" is not ADDRESS:PORT");
    EXPECT_PREFIX(replica_error(head + "endpoint = \"hostb:8471\"\n"),
                  "vmshadowd.toml:5: replica.endpoint: set, but no listen");
    EXPECT_PREFIX(
        replica_error(head + "\n[[replica.allow]]\nsubject = \"CN=a\"\nstorage = \"/s\"\n"),
        "vmshadowd.toml:6: replica.allow: primaries are allowed, but no listen");
    const std::string listening = head + "listen = \"127.0.0.2:8471\"\n";
    EXPECT_PREFIX(
        replica_error(listening + "\n[[replica.allow]]\nsubject = \"hosta\"\n"
                                  "storage = \"/s\"\n"),
        "vmshadowd.toml:8: replica.allow[0].subject: \"hosta\" is not a certificate subject");
    EXPECT_PREFIX(replica_error(listening + "\n[[replica.allow]]\nsubject = \"CN=a\"\n"),
                  "vmshadowd.toml:7: replica.allow[0].storage: missing");
    EXPECT_PREFIX(
        replica_error(listening + "\n[[replica.allow]]\nsubject = \"CN=a\"\nstorage = \"/s\"\n"
                                  "\n[[replica.allow]]\nsubject = \"CN=a\"\nstorage = \"/t\"\n"),
        "vmshadowd.toml:12: replica.allow[1].subject: \"CN=a\" is allowed twice");
    EXPECT_PREFIX(replica_error("[replica]\ncertificate = \"/c\"\nkey = \"/k\"\nca = \"/a\"\n"
                                "allow = \"CN=a\"\n"),
                  "vmshadowd.toml:5: replica.allow: expected an array of tables");
}

}  // namespace
}  // namespace vmshadow::daemon
