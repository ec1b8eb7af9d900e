// SPDX-License-Identifier: MIT
// Every numeric option of every command, fed hostile values through run_cli() as the binary
// would: each is refused at parse time with exit 2 and a one-line message naming the range,
// and nothing in the repository changes (issue 13: `prune --keep-last -1` forgot every
// point). The table must name every numeric option the CLI has: adding one without a range
// check, or without a row here, fails EveryNumericOptionIsRangeCheckedAndInTheTable.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/app.h"
#include "cli/exit_code.h"
#include "cli/names.h"
#include "cli/numeric_option.h"

namespace vmshadow::cli {
namespace {

namespace fs = std::filesystem;

// One numeric option: the command line that reaches it (VALUE is replaced), and which of the
// hostile values are documented valid values for it.
struct NumericOption {
    std::string key;  // "prune --keep-last": subcommand path and option name
    std::vector<std::string> args;
    std::set<std::string> valid;
};

const std::string kPoint = "0123456789ab";  // resolves to nothing: a command that ran fails

std::vector<NumericOption> numeric_options(const std::string& image) {
    auto with = [](std::vector<std::string> args) { return args; };
    return {
        {"prune --keep-last", with({"prune", "--keep-last", "VALUE"}), {}},
        {"prune --keep-hourly", with({"prune", "--keep-hourly", "VALUE"}), {}},
        {"prune --keep-daily", with({"prune", "--keep-daily", "VALUE"}), {}},
        {"prune --keep-weekly", with({"prune", "--keep-weekly", "VALUE"}), {}},
        {"prune --keep-monthly", with({"prune", "--keep-monthly", "VALUE"}), {}},
        {"prune --keep-yearly", with({"prune", "--keep-yearly", "VALUE"}), {}},
        {"prune --grace", with({"prune", "--keep-last", "1000", "--grace", "VALUE"}), {"0"}},
        {"gc --grace", with({"gc", "--dry-run", "--grace", "VALUE"}), {"0"}},
        {"image backup --workers",
         with({"image", "backup", image, "--name", "hostile", "--workers", "VALUE"}),
         {}},
        {"image restore --workers",
         with({"image", "restore", kPoint, "/nonexistent/out", "--workers", "VALUE"}),
         {}},
        {"restore --workers", with({"restore", kPoint, "--workers", "VALUE"}), {}},
        {"restore --bandwidth", with({"restore", kPoint, "--instant", "--bandwidth", "VALUE"}), {}},
        {"backup --max-scratch", with({"backup", "no-such-vm", "--max-scratch", "VALUE"}), {}},
        {"shadow create --max-size",
         with({"shadow", "create", "no-such-vm", "--max-size", "VALUE"}),
         {}},
        {"shadow copy --max-size",
         with({"shadow", "copy", "no-such-vm", "--disk", "vda", "/nonexistent/out", "--max-size",
               "VALUE"}),
         {}},
        {"backup --thaw-deadline", with({"backup", "no-such-vm", "--thaw-deadline", "VALUE"}), {}},
        {"backup --freeze-timeout",
         with({"backup", "no-such-vm", "--freeze-timeout", "VALUE"}),
         {}},
        {"vm freeze --thaw-deadline",
         with({"vm", "freeze", "no-such-vm", "--thaw-deadline", "VALUE"}),
         {}},
        {"vm freeze --hold", with({"vm", "freeze", "no-such-vm", "--hold", "VALUE"}), {"0"}},
        {"verify --timeout", with({"verify", kPoint, "--boot", "--timeout", "VALUE"}), {}},
        {"repo init --compression-level",
         with({"repo", "init", "/nonexistent/repo", "--compression-level", "VALUE"}),
         {}},
        // The hidden thaw guardian: vmshadow starts it itself, but it is still a parser.
        {"__thaw-guardian --arm-timeout-ms",
         with({"__thaw-guardian", "--uuid", "x", "--arm-timeout-ms", "VALUE"}),
         {}},
        {"__thaw-guardian --release-after-ms",
         with({"__thaw-guardian", "--uuid", "x", "--release-after-ms", "VALUE"}),
         {"0"}},
        {"__thaw-guardian --settle-limit-ms",
         with({"__thaw-guardian", "--uuid", "x", "--settle-limit-ms", "VALUE"}),
         {"0"}},
        {"__thaw-guardian --armed-fd",
         with({"__thaw-guardian", "--uuid", "x", "--armed-fd", "VALUE"}),
         {"-1", "0"}},
        // Clients of vmshadowd: refused before any request is sent.
        {"job add --keep-last",
         with({"job", "add", "x", "--kind", "backup", "--repository", "main", "--keep-last",
               "VALUE"}),
         {}},
        {"job add --keep-hourly",
         with({"job", "add", "x", "--kind", "backup", "--repository", "main", "--keep-hourly",
               "VALUE"}),
         {}},
        {"job add --keep-daily",
         with({"job", "add", "x", "--kind", "backup", "--repository", "main", "--keep-daily",
               "VALUE"}),
         {}},
        {"job add --keep-weekly",
         with({"job", "add", "x", "--kind", "backup", "--repository", "main", "--keep-weekly",
               "VALUE"}),
         {}},
        {"job add --keep-monthly",
         with({"job", "add", "x", "--kind", "backup", "--repository", "main", "--keep-monthly",
               "VALUE"}),
         {}},
        {"job add --keep-yearly",
         with({"job", "add", "x", "--kind", "backup", "--repository", "main", "--keep-yearly",
               "VALUE"}),
         {}},
        {"job add --alert-after-hours",
         with({"job", "add", "x", "--kind", "backup", "--repository", "main", "--alert-after-hours",
               "VALUE"}),
         {"0"}},
        {"job add --read-data-percent",
         with({"job", "add", "x", "--kind", "backup", "--repository", "main", "--read-data-percent",
               "VALUE"}),
         {"0"}},
        {"job edit --keep-last", with({"job", "edit", "x", "--keep-last", "VALUE"}), {}},
        {"job edit --keep-hourly", with({"job", "edit", "x", "--keep-hourly", "VALUE"}), {}},
        {"job edit --keep-daily", with({"job", "edit", "x", "--keep-daily", "VALUE"}), {}},
        {"job edit --keep-weekly", with({"job", "edit", "x", "--keep-weekly", "VALUE"}), {}},
        {"job edit --keep-monthly", with({"job", "edit", "x", "--keep-monthly", "VALUE"}), {}},
        {"job edit --keep-yearly", with({"job", "edit", "x", "--keep-yearly", "VALUE"}), {}},
        {"job edit --alert-after-hours",
         with({"job", "edit", "x", "--alert-after-hours", "VALUE"}),
         {"0"}},
        {"job edit --read-data-percent",
         with({"job", "edit", "x", "--read-data-percent", "VALUE"}),
         {"0"}},
        {"task list --limit", with({"task", "list", "--limit", "VALUE"}), {}},
        {"task log --start", with({"task", "log", "1", "--start", "VALUE"}), {}},
        // Task ids are positional: after "--" so that "-inf" reaches the check.
        {"task show id", with({"task", "show", "--", "VALUE"}), {}},
        {"task log id", with({"task", "log", "--", "VALUE"}), {}},
        {"task abort id", with({"task", "abort", "--", "VALUE"}), {}},
        {"replica enable --history",
         with({"replica", "enable", "web1", "--to", "b:1", "--interval", "5m", "--history",
               "VALUE"}),
         {"0"}},
        {"replica enable --app-consistent-every",
         with({"replica", "enable", "web1", "--to", "b:1", "--interval", "5m",
               "--app-consistent-every", "VALUE"}),
         {"0"}},
        {"replica enable --bandwidth",
         with({"replica", "enable", "web1", "--to", "b:1", "--interval", "5m", "--bandwidth",
               "VALUE"}),
         {"0"}},
        {"replica test-failover --point",
         with({"replica", "test-failover", "web1", "--point", "VALUE"}),
         {"0"}},
        {"replica failover --point",
         with({"replica", "failover", "web1", "--yes", "--point", "VALUE"}),
         {"0"}},
        // Refused while parsing: the directories are never made.
        {"cert ca --days", with({"cert", "ca", "/nonexistent/vmshadow-ca", "--days", "VALUE"}), {}},
        {"cert issue --days",
         with({"cert", "issue", "--ca", "/nonexistent/ca", "--name", "h", "--days", "VALUE",
               "/nonexistent/h"}),
         {}},
        // Global S3 caps: 0 is "no cap"; the repository is never reached.
        {"--s3-max-rps", with({"points", "--s3-max-rps", "VALUE"}), {"0"}},
        {"--s3-max-bandwidth", with({"points", "--s3-max-bandwidth", "VALUE"}), {"0"}},
    };
}

const std::vector<std::string> kHostile = {"-1",
                                           "0",
                                           "nan",
                                           "NaN",
                                           "inf",
                                           "-inf",
                                           "1e308",
                                           "99999999999999999999",
                                           std::string(300, '9'),
                                           "abc",
                                           "",
                                           "1x",
                                           "0x10",
                                           " 5",
                                           "5 ",
                                           "+5",
                                           "1.5e3"};

// Walks every command and subcommand; calls `f(key, option)` for each option.
void for_each_option(CLI::App& app, const std::string& path,
                     const std::function<void(const std::string&, CLI::Option*)>& f) {
    for (CLI::Option* o : app.get_options()) {
        if (o->get_name().empty() || o->get_name() == "--help") continue;
        f((path.empty() ? "" : path + " ") + o->get_name(), o);
    }
    for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
        for_each_option(*sub, (path.empty() ? "" : path + " ") + sub->get_name(), f);
}

class NumericOptions : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string pattern = (fs::temp_directory_path() / "numeric-cli-XXXXXX").string();
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        dir_ = pattern;
        ::setenv("VMSHADOW_CONFIG", (dir_ / "none.conf").c_str(), 1);
        ::setenv("VMSHADOW_REPO", (dir_ / "repo").c_str(), 1);
        ::setenv("LIBVIRT_DEFAULT_URI", "test:///default", 1);
        ::setenv("VMSHADOW_WRITER_STATE", (dir_ / "writers.json").c_str(), 1);
        image_ = (dir_ / "disk.img").string();
        std::ofstream(image_) << std::string(65536, 'x');
    }
    void TearDown() override {
        ::unsetenv("VMSHADOW_REPO");
        ::unsetenv("LIBVIRT_DEFAULT_URI");
        ::unsetenv("VMSHADOW_WRITER_STATE");
        fs::remove_all(dir_);
    }

    // Runs `vmshadow args...`; returns the exit code, stdout and stderr in `out` and `err`.
    int run(std::vector<std::string> args, std::string* out = nullptr, std::string* err = nullptr) {
        args.insert(args.begin(), "vmshadow");
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        ::testing::internal::CaptureStdout();
        ::testing::internal::CaptureStderr();
        int code = run_cli(static_cast<int>(argv.size()), argv.data());
        std::string o = ::testing::internal::GetCapturedStdout();
        std::string e = ::testing::internal::GetCapturedStderr();
        if (out) *out = o;
        if (err) *err = e;
        return code;
    }
    // Parses without running the command: for values that are valid.
    static bool parses(std::vector<std::string> args) {
        CLI::App app;
        GlobalOptions global;
        Action action;
        build_cli(app, global, action);
        std::reverse(args.begin(), args.end());
        try {
            app.parse(args);
        } catch (const CLI::ParseError& e) {
            std::cerr << "parse error: " << e.what() << "\n";
            return false;
        }
        return true;
    }
    std::string points_json() {
        std::string out;
        EXPECT_EQ(run({"points", "--json"}, &out), 0);
        return out;
    }
    // A repository with three points of one image, the second and third the same data.
    void make_repository() {
        ASSERT_EQ(run({"repo", "init"}), 0);
        for (int i = 0; i < 3; ++i) ASSERT_EQ(run({"image", "backup", image_, "--name", "web"}), 0);
    }

    fs::path dir_;
    std::string image_;
};

TEST_F(NumericOptions, EveryNumericOptionIsRangeCheckedAndInTheTable) {
    std::set<std::string> in_table;
    for (const auto& o : numeric_options(image_)) in_table.insert(o.key);
    CLI::App app;
    GlobalOptions global;
    Action action;
    build_cli(app, global, action);
    std::set<std::string> found;
    for_each_option(app, "", [&](const std::string& key, CLI::Option* o) {
        static const std::set<std::string> kNumericTypes = {"INT", "UINT",    "FLOAT", "NUMBER",
                                                            "N",   "SECONDS", "SIZE"};
        bool ranged = true;
        try {
            o->get_validator(kRangeValidator);
        } catch (const CLI::OptionNotFound&) {
            ranged = false;
        }
        // CLI11 appends validator descriptions: "INT:INT in [0 - 10]".
        const std::string type = o->get_type_name().substr(0, o->get_type_name().find(':'));
        if (!ranged && !kNumericTypes.contains(type)) return;
        EXPECT_TRUE(ranged) << key << " is numeric (" << o->get_type_name()
                            << ") but not declared with src/cli/numeric_option.h";
        EXPECT_TRUE(in_table.contains(key)) << key << " is missing from numeric_options()";
        found.insert(key);
    });
    for (const auto& key : in_table) EXPECT_TRUE(found.contains(key)) << key << " no longer exists";
}

TEST_F(NumericOptions, HostileValuesExitTwoWithTheRangeAndChangeNothing) {
    make_repository();
    const std::string before = points_json();
    const auto repo_files = [&] {
        std::set<std::string> files;
        for (const auto& e : fs::recursive_directory_iterator(dir_ / "repo"))
            if (!e.path().string().contains("/locks/")) files.insert(e.path().string());
        return files;
    };
    const auto files_before = repo_files();
    for (const auto& option : numeric_options(image_)) {
        const std::string name = option.key.substr(option.key.rfind(' ') + 1);
        for (const auto& value : kHostile) {
            auto args = option.args;
            std::replace(args.begin(), args.end(), std::string("VALUE"), value);
            if (option.valid.contains(value)) {
                EXPECT_TRUE(parses(args)) << option.key << " " << value;
                continue;
            }
            std::string err;
            int code = run(args, nullptr, &err);
            EXPECT_EQ(code, exit_usage) << option.key << " '" << value << "': " << err;
            // One line that names the option and says the range, without echoing 300 digits.
            EXPECT_TRUE(err.starts_with("vmshadow: " + name + ": must be ")) << err;
            EXPECT_NE(err.find(" from "), std::string::npos) << err;
            EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
            EXPECT_LT(err.size(), 200u) << err;
        }
    }
    EXPECT_EQ(points_json(), before);
    EXPECT_EQ(repo_files(), files_before);
}

TEST_F(NumericOptions, NegativeKeepLastForgetsNothing) {
    make_repository();
    const std::string before = points_json();
    std::string err;
    for (const char* flag : {"--dry-run", ""}) {
        std::vector<std::string> args = {"prune", "--keep-last", "-1"};
        if (*flag) args.push_back(flag);
        EXPECT_EQ(run(args, nullptr, &err), exit_usage);
    }
    EXPECT_EQ(err,
              "vmshadow: --keep-last: must be a whole number from 1 to 1000000, got '-1' (see "
              "`vmshadow --help`)\n");
    EXPECT_EQ(points_json(), before);
    EXPECT_EQ(nlohmann::json::parse(before).size(), 3u);
    // A valid count still prunes: the check refuses only what is out of range.
    EXPECT_EQ(run({"prune", "--keep-last", "1"}), 0);
    EXPECT_EQ(nlohmann::json::parse(points_json()).size(), 1u);
}

TEST_F(NumericOptions, RangesAreSaidInHumanTerms) {
    std::string err;
    EXPECT_EQ(run({"restore", kPoint, "--instant", "--bandwidth", "0"}, nullptr, &err), exit_usage);
    EXPECT_NE(err.find("--bandwidth: must be a whole number from 1 to 1048576, got '0'"),
              std::string::npos)
        << err;
    EXPECT_EQ(run({"backup", "vm", "--thaw-deadline", "nan"}, nullptr, &err), exit_usage);
    EXPECT_NE(err.find("--thaw-deadline: must be a number of seconds from 0.1 to 3600"),
              std::string::npos)
        << err;
    EXPECT_EQ(run({"backup", "vm", "--max-scratch", "0"}, nullptr, &err), exit_usage);
    EXPECT_NE(err.find("--max-scratch: must be a size from 1M to 1P"), std::string::npos) << err;
    EXPECT_EQ(run({"image", "restore", kPoint, "out", "--workers", "100000"}, nullptr, &err),
              exit_usage);
    EXPECT_NE(err.find("--workers: must be a whole number from 1 to 256, got '100000'"),
              std::string::npos)
        << err;
}

TEST_F(NumericOptions, ValidValuesStillParse) {
    EXPECT_TRUE(parses({"backup", "vm", "--thaw-deadline", "0.5", "--max-scratch", "20G"}));
    EXPECT_TRUE(parses({"backup", "vm", "--max-scratch", "1048576"}));
    EXPECT_TRUE(parses({"vm", "freeze", "vm", "--thaw-deadline", "3600", "--hold", "0.25"}));
    EXPECT_TRUE(parses({"prune", "--keep-last", "1000000", "--keep-daily", "7"}));
    EXPECT_TRUE(parses({"image", "restore", kPoint, "out", "--workers", "256"}));
    EXPECT_TRUE(parses({"repo", "init", "--compression-level", "22"}));
    EXPECT_EQ(parse_size("1.5G"), (3ull << 29));
    EXPECT_EQ(size_text(1ull << 50), "1P");
}

// Names that become a domain name, a folder or a table column are checked before anything
// is written.
TEST_F(NumericOptions, BadNamesExitTwoBeforeAnythingIsWritten) {
    make_repository();
    const std::string before = points_json();
    const std::vector<std::string> bad = {
        "", "a/b", "a\nb", std::string(129, 'a'), ".vm", "-vm", "a b", "vm\x1b[2J", "..", "é"};
    std::string err;
    for (const auto& name : bad) {
        // "--as=NAME" when it starts with '-': it must reach the check, not look like a flag.
        auto flag = [&](const std::string& option) {
            return name.starts_with('-') ? std::vector<std::string>{option + "=" + name}
                                         : std::vector<std::string>{option, name};
        };
        std::vector<std::string> args = {"restore", "web@latest"};
        std::ranges::copy(flag("--as"), std::back_inserter(args));
        EXPECT_EQ(run(args, nullptr, &err), exit_usage) << name;
        EXPECT_NE(err.find("--as: the name "), std::string::npos) << err;
        EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
        args = {"image", "backup", image_};
        std::ranges::copy(flag("--name"), std::back_inserter(args));
        EXPECT_EQ(run(args, nullptr, &err), exit_usage) << name;
        EXPECT_NE(err.find("--name: the name "), std::string::npos) << err;
        EXPECT_EQ(run({"annotate", "web@latest", "--", name}, nullptr, &err), exit_usage) << name;
    }
    EXPECT_EQ(run({"restore", "web@latest", "--as", ""}, nullptr, &err), exit_usage);
    EXPECT_NE(err.find("--as: the name is empty"), std::string::npos) << err;
    EXPECT_EQ(points_json(), before);
    for (const std::string& good :
         std::vector<std::string>{"web", "vmshadow-test-RestoreAsCopy-123456-a1b2c3", "db_1.prod+x",
                                  std::string(128, 'a')})
        EXPECT_TRUE(parses({"restore", "web@latest", "--as", good})) << good;
}

TEST_F(NumericOptions, PointSpecWithoutANameIsUsage) {
    make_repository();
    std::string err;
    EXPECT_EQ(run({"image", "restore", "@latest", (dir_ / "out").string()}, nullptr, &err),
              exit_usage)
        << err;
    EXPECT_EQ(run({"image", "restore", "web", (dir_ / "out").string()}, nullptr, &err), exit_usage)
        << err;
    EXPECT_EQ(run({"image", "restore", "nope@latest", (dir_ / "out").string()}, nullptr, &err),
              exit_not_found)
        << err;
    EXPECT_FALSE(fs::exists(dir_ / "out"));
}

// chmod 000 on the repository: "permission" (11), not "no repository, run repo init" (3).
// Root reads through any mode, so the check runs in a child that drops to nobody.
TEST_F(NumericOptions, UnreadableRepositoryIsPermissionNotNotFound) {
    make_repository();
    ::chmod(dir_.c_str(), 0755);
    ::chmod((dir_ / "repo").c_str(), 0);
    std::string repo = (dir_ / "repo").string();
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(100);
        ::setenv("VMSHADOW_REPO", repo.c_str(), 1);
        std::string a0 = "vmshadow", a1 = "points";
        char* argv[] = {a0.data(), a1.data(), nullptr};
        ::_exit(run_cli(2, argv));
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ::chmod((dir_ / "repo").c_str(), 0700);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), exit_permission);
}

TEST(TableCell, KeepsColumnsAlignedWhateverTheNameHolds) {
    EXPECT_EQ(table_cell("web", 6), "web   ");
    EXPECT_EQ(table_cell("a\nb", 6), "a\\nb  ");
    EXPECT_EQ(table_cell(std::string(300, 'x'), 6), "xxxxx~");
    EXPECT_EQ(table_cell("\x1b[2J", 8), "\\x1b[2J ");
    for (const std::string& s :
         std::vector<std::string>{"", "a\tb", std::string(50, '\n'), "\xc3\xa9"})
        EXPECT_EQ(table_cell(s, 20).size(), 20u) << s;
    EXPECT_EQ(printable("ok"), "ok");
}

}  // namespace
}  // namespace vmshadow::cli
