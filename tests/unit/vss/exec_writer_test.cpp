// SPDX-License-Identifier: MIT
#include "vss/exec_writer.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <thread>

#include "unit/vss/temp_dir.h"
#include "vss/coordinator.h"
#include "vss/null_provider.h"
#include "vss/restore_coordinator.h"

namespace vmshadow::vss {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;

ExecWriterConfig config_for(const std::filesystem::path& script, std::string name = "app") {
    ExecWriterConfig config;
    config.name = std::move(name);
    config.command = {script.string()};
    config.events.insert(std::begin(kAllEvents), std::end(kAllEvents));
    config.default_timeout = 10s;
    return config;
}

struct Run {
    std::unique_ptr<Coordinator> coordinator;
    Result<BackupDocument> document;
};

Run backup_with(std::vector<std::shared_ptr<Writer>> writers, CoordinatorOptions options = {}) {
    if (options.backup_id.empty()) options.backup_id = "backup-7";
    auto c = std::make_unique<Coordinator>(std::move(writers), std::make_shared<NullProvider>(),
                                           std::move(options));
    auto document = run_backup(*c, {});
    return {std::move(c), std::move(document)};
}

Run backup_with(const ExecWriterConfig& config, CoordinatorOptions options = {}) {
    return backup_with({std::make_shared<ExecWriter>(config)}, std::move(options));
}

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

// True when `pid` no longer runs (gone, or a zombie waiting for a reaper that isn't us).
bool process_gone(pid_t pid) {
    for (int i = 0; i < 100; ++i) {
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        if (!std::getline(stat, line)) return true;
        auto close = line.rfind(')');
        if (close != std::string::npos && line.substr(close + 2, 1) == "Z") return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

pid_t read_pid(const TempDir& dir, const std::string& name) {
    return static_cast<pid_t>(std::stol(dir.read(name)));
}

void expect_no_children_left() {
    errno = 0;
    EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
}

TEST(ExecWriter, SuccessfulCommandIsCalledWithEachEventInOrder) {
    TempDir dir;
    auto script =
        dir.script("hook", "echo \"$1 $VMSHADOW_EVENT\" >> " + (dir / "log").string() + "\n");
    auto run = backup_with(config_for(script));
    ASSERT_TRUE(run.document) << run.document.error().message();
    EXPECT_EQ(lines(dir.read("log")),
              (std::vector<std::string>{"identify identify", "prepare-backup prepare-backup",
                                        "prepare-snapshot prepare-snapshot", "freeze freeze",
                                        "thaw thaw", "post-snapshot post-snapshot",
                                        "backup-complete backup-complete"}));
    EXPECT_EQ(run.document->components.at(0).key.display(), "exec:app:exec/app");
    expect_no_children_left();
}

TEST(ExecWriter, EnvironmentDescribesTheBackup) {
    TempDir dir;
    auto script =
        dir.script("hook", "[ \"$1\" = freeze ] || exit 0\nenv > " + (dir / "env").string() + "\n");
    ExecWriterConfig config = config_for(script, "pgsql");
    config.environment["PGHOST"] = "/run/postgresql";
    config.timeouts[Event::freeze] = 7s;
    CoordinatorOptions options;
    options.vms = {"web1", "db1"};
    options.backup_type = BackupType::incremental;
    auto run = backup_with(config, options);
    ASSERT_TRUE(run.document) << run.document.error().message();
    auto env = lines(dir.read("env"));
    auto has = [&](const std::string& line) {
        return std::find(env.begin(), env.end(), line) != env.end();
    };
    EXPECT_TRUE(has("VMSHADOW_EVENT=freeze"));
    EXPECT_TRUE(has("VMSHADOW_OPERATION=backup"));
    EXPECT_TRUE(has("VMSHADOW_BACKUP_ID=backup-7"));
    EXPECT_TRUE(has("VMSHADOW_BACKUP_TYPE=incremental"));
    EXPECT_TRUE(has("VMSHADOW_VMS=web1 db1"));
    EXPECT_TRUE(has("VMSHADOW_WRITER=pgsql"));
    EXPECT_TRUE(has("VMSHADOW_COMPONENTS=exec/pgsql"));
    EXPECT_TRUE(has("VMSHADOW_TIMEOUT=7") || has("VMSHADOW_TIMEOUT=6"));
    EXPECT_TRUE(has("PGHOST=/run/postgresql"));
    EXPECT_TRUE(std::any_of(env.begin(), env.end(),
                            [](const std::string& l) { return l.rfind("PATH=", 0) == 0; }));
}

TEST(ExecWriter, NonZeroExitIsANonRetryableVetoWithTheLastStderrLine) {
    TempDir dir;
    auto script = dir.script("hook", "echo \"$1\" >> " + (dir / "log").string() +
                                         "\n[ \"$1\" = freeze ] || exit 0\n"
                                         "echo 'connecting' >&2\necho 'cannot flush tables' >&2\n"
                                         "exit 3\n");
    auto run = backup_with(config_for(script));
    ASSERT_FALSE(run.document);
    EXPECT_EQ(run.document.error().kind(), ErrorKind::cancelled);
    const WriterReport report = run.coordinator->report();
    const WriterStatus& status = report.writers.at(0);
    EXPECT_EQ(status.state, WriterState::failed_at_freeze);
    ASSERT_TRUE(status.last_error);
    EXPECT_EQ(status.last_error->message, "exit status 3: cannot flush tables");
    EXPECT_FALSE(status.last_error->retryable());
    EXPECT_EQ(lines(dir.read("log")).back(), "abort");
}

TEST(ExecWriter, ExitSeventyFiveIsARetryableVeto) {
    TempDir dir;
    auto script = dir.script("hook",
                             "[ \"$1\" = prepare-backup ] || exit 0\n"
                             "echo 'replication lag too high' >&2\nexit 75\n");
    auto run = backup_with(config_for(script));
    ASSERT_FALSE(run.document);
    const WriterReport report = run.coordinator->report();
    const WriterStatus& status = report.writers.at(0);
    EXPECT_EQ(status.state, WriterState::failed_at_prepare_backup);
    EXPECT_EQ(status.last_error->code, FailureCode::retryable);
    EXPECT_NE(run.document.error().message().find("replication lag too high"), std::string::npos);
    EXPECT_NE(run.document.error().message().find("(retryable)"), std::string::npos);
}

TEST(ExecWriter, HangingCommandTimesOutAndItsWholeProcessGroupIsKilled) {
    TempDir dir;
    auto script = dir.script("hook",
                             "[ \"$1\" = freeze ] || exit 0\n"
                             "sleep 1000 &\necho $! > " +
                                 (dir / "child.pid").string() +
                                 "\n"
                                 "echo $$ > " +
                                 (dir / "hook.pid").string() +
                                 "\n"
                                 "echo 'flushing' >&2\nsleep 1000\n");
    ExecWriterConfig config = config_for(script);
    config.timeouts[Event::freeze] = 300ms;
    auto started = std::chrono::steady_clock::now();
    auto run = backup_with(config);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
    ASSERT_FALSE(run.document);
    EXPECT_EQ(run.document.error().kind(), ErrorKind::timeout);
    const WriterReport report = run.coordinator->report();
    const WriterStatus& status = report.writers.at(0);
    EXPECT_EQ(status.state, WriterState::failed_at_freeze);
    EXPECT_EQ(status.last_error->code, FailureCode::timeout);
    EXPECT_NE(status.last_error->message.find("process group was killed: flushing"),
              std::string::npos);
    EXPECT_TRUE(process_gone(read_pid(dir, "hook.pid")));
    EXPECT_TRUE(process_gone(read_pid(dir, "child.pid")));
    expect_no_children_left();
}

TEST(ExecWriter, CoordinatorDeadlineBoundsTheCommandEvenWithALongerConfigTimeout) {
    TempDir dir;
    auto script = dir.script("hook", "[ \"$1\" = thaw ] || exit 0\necho $$ > " +
                                         (dir / "hook.pid").string() + "\nexec sleep 1000\n");
    CoordinatorOptions options;
    options.timeouts.thaw = 300ms;
    auto run = backup_with(config_for(script), options);
    ASSERT_FALSE(run.document);
    EXPECT_EQ(run.document.error().kind(), ErrorKind::timeout);
    EXPECT_EQ(run.coordinator->report().writers.at(0).state, WriterState::failed_at_thaw);
    EXPECT_TRUE(process_gone(read_pid(dir, "hook.pid")));
}

TEST(ExecWriter, WhatTheCommandLeavesRunningInItsGroupIsKilledWhenItExits) {
    TempDir dir;
    auto script = dir.script("hook",
                             "[ \"$1\" = freeze ] || exit 0\nsleep 1000 >/dev/null 2>&1 &"
                             "\necho $! > " +
                                 (dir / "child.pid").string() + "\nexit 0\n");
    auto run = backup_with(config_for(script));
    ASSERT_TRUE(run.document) << run.document.error().message();
    EXPECT_TRUE(process_gone(read_pid(dir, "child.pid")));
}

TEST(ExecWriter, EventsTheConfigDoesNotListAreNotCalled) {
    TempDir dir;
    auto script = dir.script("hook", "echo \"$1\" >> " + (dir / "log").string() + "\n");
    ExecWriterConfig config = config_for(script);
    config.events = {Event::freeze, Event::thaw};
    ASSERT_TRUE(backup_with(config).document);
    EXPECT_EQ(lines(dir.read("log")), (std::vector<std::string>{"freeze", "thaw"}));
}

TEST(ExecWriter, IdentifyOutputDescribesTheComponents) {
    TempDir dir;
    auto script =
        dir.script("hook",
                   "[ \"$1\" = identify ] || exit 0\n"
                   "echo '{\"components\": [{\"name\": \"main\", \"logical_path\": \"pgsql\","
                   " \"files\": [{\"path\": \"/var/lib/postgresql\"}]}]}'\n");
    ExecWriter writer(config_for(script, "pg"));
    EventContext context;
    context.deadline = EventDeadline::after(5s);
    auto metadata = writer.identify(context);
    ASSERT_TRUE(metadata) << metadata.error().message;
    EXPECT_EQ(metadata->writer_id, "exec:pg");
    ASSERT_EQ(metadata->components.size(), 1u);
    EXPECT_EQ(metadata->components[0].logical_path, "pgsql");
    EXPECT_EQ(metadata->components[0].files.at(0).path, "/var/lib/postgresql");
}

TEST(ExecWriter, IdentifyOutputThatIsNotJsonIsAVeto) {
    TempDir dir;
    auto script = dir.script("hook", "echo hello\n");
    ExecWriter writer(config_for(script));
    EventContext context;
    context.deadline = EventDeadline::after(5s);
    EXPECT_FALSE(writer.identify(context));
}

TEST(ExecWriter, MissingCommandIsANonRetryableVeto) {
    ExecWriter writer(config_for("/nonexistent/hook"));
    EventContext context;
    context.event = Event::freeze;
    context.deadline = EventDeadline::after(5s);
    auto result = writer.freeze(context);
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().code, FailureCode::nonretryable);
    EXPECT_NE(result.error().message.find("/nonexistent/hook"), std::string::npos);
}

TEST(ExecWriter, PostRestoreSeesTheFileRestoreStatus) {
    TempDir dir;
    auto script =
        dir.script("hook", "echo \"$1 $VMSHADOW_OPERATION $VMSHADOW_FILE_RESTORE_STATUS\" >> " +
                               (dir / "log").string() + "\n");
    auto writer = std::make_shared<ExecWriter>(config_for(script));
    auto backup = backup_with({writer});
    ASSERT_TRUE(backup.document);
    RestoreCoordinator restore({writer}, *backup.document, {});
    ASSERT_TRUE(restore.gather_writer_metadata());
    ASSERT_TRUE(restore.select_all_for_restore());
    ASSERT_TRUE(restore.pre_restore());
    ASSERT_TRUE(restore.set_file_restore_status(backup.document->components.at(0).key,
                                                FileRestoreStatus::all));
    ASSERT_TRUE(restore.post_restore());
    auto log = lines(dir.read("log"));
    ASSERT_GE(log.size(), 2u);
    EXPECT_EQ(log[log.size() - 2], "pre-restore restore undefined");
    EXPECT_EQ(log.back(), "post-restore restore all");
}

TEST(ExecWriter, HooksOfSeveralWritersRunInParallel) {
    TempDir dir;
    auto script = dir.script("hook", "[ \"$1\" = freeze ] && sleep 0.4\nexit 0\n");
    std::vector<std::shared_ptr<Writer>> writers;
    for (const char* name : {"a", "b", "c", "d"}) {
        writers.push_back(std::make_shared<ExecWriter>(config_for(script, name)));
    }
    auto started = std::chrono::steady_clock::now();
    auto run = backup_with(writers);
    ASSERT_TRUE(run.document) << run.document.error().message();
    EXPECT_LT(std::chrono::steady_clock::now() - started, 1400ms);  // serially: 1.6 s
}

}  // namespace
}  // namespace vmshadow::vss
