// SPDX-License-Identifier: MIT
#include "daemon/task_store.h"

#include <algorithm>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <utility>

#include "common/enum_names.h"
#include "daemon/sqlite_db.h"

// The database (<state-dir>/state.db). Schema version 1 — names and meanings never change;
// a new column or table is a new version, with a migration step in Impl::init().
//
//   tasks      one row per task; times unix seconds, 0 = not yet; state and error_kind are the
//              names of TaskState and ErrorKind; progress_* the last progress written.
//   task_log   (task, line) → time, level name, text; lines 1, 2, ... dense per task,
//              numbered inside the transaction that inserts them (tasks.log_lines is the
//              counter).
//   job_state  job → last schedule slot handled, last success, newest task.
//   vm_state   vm → the last successful backup's figures, failures.
//
// Limits: a log line is cut at kMaxLineBytes, a task keeps kMaxLogLines lines and then one
// line saying the rest was dropped, and a result larger than kMaxResultBytes is replaced by
// {"truncated": true, "bytes": N} (a cut JSON text would not parse).

namespace vmshadow::daemon {

namespace {

constexpr std::int64_t kSchemaVersion = 1;
constexpr std::size_t kMaxLineBytes = 4096;
constexpr std::int64_t kMaxLogLines = 100000;
constexpr std::size_t kMaxResultBytes = 1024 * 1024;
constexpr std::size_t kMaxErrorBytes = 4096;
constexpr auto kProgressInterval = std::chrono::seconds(1);
constexpr std::string_view kInterruptedMessage = "the daemon stopped while this task ran";

constexpr auto kStateNames = enum_names<TaskState>({{TaskState::queued, "queued"},
                                                    {TaskState::running, "running"},
                                                    {TaskState::ok, "ok"},
                                                    {TaskState::failed, "failed"},
                                                    {TaskState::cancelled, "cancelled"},
                                                    {TaskState::interrupted, "interrupted"}});

constexpr auto kLevelNames = enum_names<LogLevel>({{LogLevel::debug, "debug"},
                                                   {LogLevel::info, "info"},
                                                   {LogLevel::warning, "warning"},
                                                   {LogLevel::error, "error"}});

constexpr const char* kSchema = R"sql(
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids of pruned tasks never return
    kind TEXT NOT NULL,
    job TEXT NOT NULL,
    target TEXT NOT NULL,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    queued_at INTEGER NOT NULL,
    started_at INTEGER NOT NULL DEFAULT 0,
    ended_at INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    error_kind TEXT NOT NULL DEFAULT '',
    progress_phase TEXT NOT NULL DEFAULT '',
    progress_item TEXT NOT NULL DEFAULT '',
    bytes_done INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER NOT NULL DEFAULT 0,
    items_done INTEGER NOT NULL DEFAULT 0,
    items_total INTEGER NOT NULL DEFAULT 0,
    log_lines INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_by_job ON tasks (job, id);
CREATE INDEX tasks_by_state ON tasks (state);
CREATE TABLE task_log (
    task INTEGER NOT NULL,
    line INTEGER NOT NULL,
    time INTEGER NOT NULL,
    level TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (task, line)
) WITHOUT ROWID;
CREATE TABLE job_state (
    job TEXT PRIMARY KEY,
    last_slot INTEGER,
    last_success INTEGER,
    last_task INTEGER
);
CREATE TABLE vm_state (
    vm TEXT PRIMARY KEY,
    last_success INTEGER NOT NULL DEFAULT 0,
    last_duration_s REAL NOT NULL DEFAULT 0,
    last_bytes_added INTEGER NOT NULL DEFAULT 0,
    last_freeze_ms INTEGER NOT NULL DEFAULT -1,
    last_point TEXT NOT NULL DEFAULT '',
    last_consistency TEXT NOT NULL DEFAULT '',
    failures_total INTEGER NOT NULL DEFAULT 0,
    last_failure INTEGER NOT NULL DEFAULT 0
);
PRAGMA user_version = 1;
)sql";

constexpr const char* kTaskColumns =
    "SELECT id, kind, job, target, trigger, state, queued_at, started_at, ended_at, result, "
    "error, error_kind, progress_phase, progress_item, bytes_done, bytes_total, items_done, "
    "items_total, log_lines FROM tasks ";

// Cuts `text` to at most `max` bytes without splitting a UTF-8 sequence.
std::string_view cut_utf8(std::string_view text, std::size_t max) {
    if (text.size() <= max) return text;
    std::size_t end = max;
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
    return text.substr(0, end);
}

std::string bounded_line(std::string_view text) {
    static constexpr std::string_view kMark = " [line truncated]";
    if (text.size() <= kMaxLineBytes) return std::string(text);
    return std::string(cut_utf8(text, kMaxLineBytes - kMark.size())) + std::string(kMark);
}

std::string bounded_result(std::string_view json) {
    if (json.size() <= kMaxResultBytes) return std::string(json);
    return nlohmann::json{{"truncated", true}, {"bytes", json.size()}}.dump();
}

std::int64_t to_db(std::uint64_t value) {
    return static_cast<std::int64_t>(
        std::min<std::uint64_t>(value, std::numeric_limits<std::int64_t>::max()));
}

std::uint64_t from_db(std::int64_t value) {
    return value < 0 ? 0 : static_cast<std::uint64_t>(value);
}

TaskRecord read_task(const Statement& row) {
    TaskRecord t;
    t.id = row.int64(0);
    t.kind = row.text(1);
    t.job = row.text(2);
    t.target = row.text(3);
    t.trigger = row.text(4);
    // An unknown name can only come from a newer writer, which the version check refuses.
    t.state = kStateNames.parse(row.text(5)).value_or(TaskState::failed);
    t.queued_at = row.int64(6);
    t.started_at = row.int64(7);
    t.ended_at = row.int64(8);
    t.result = row.text(9);
    t.error = row.text(10);
    t.error_kind = row.text(11);
    t.progress.phase = row.text(12);
    t.progress.item = row.text(13);
    t.progress.bytes_done = from_db(row.int64(14));
    t.progress.bytes_total = from_db(row.int64(15));
    t.progress.items_done = from_db(row.int64(16));
    t.progress.items_total = from_db(row.int64(17));
    t.log_lines = row.int64(18);
    return t;
}

}  // namespace

std::string_view task_state_name(TaskState state) {
    return kStateNames.name(state);
}

std::optional<TaskState> parse_task_state(std::string_view name) {
    return kStateNames.parse(name);
}

struct TaskStore::Impl {
    Impl(SqliteDb db, const Clock& clock) : db(std::move(db)), clock(&clock) {}

    struct LiveProgress {
        Progress latest;
        Clock::time_point written;
        bool dirty = false;
    };

    SqliteDb db;
    const Clock* clock;
    mutable std::mutex mutex;
    std::unordered_map<std::int64_t, LiveProgress> progress;  // tasks not yet finished

    std::int64_t now() const { return unix_seconds(clock->now()); }
    Status init();
    Result<std::int64_t> schema_version() const;
    Result<std::int64_t> count_objects() const;
    Status write_progress(std::int64_t id, const Progress& p);
    void merge_progress(TaskRecord& task) const;
    Result<std::optional<TaskRecord>> get(std::int64_t id) const;
};

Status TaskStore::Impl::init() {
    // WAL: readers (the API) never wait for the writer. synchronous=NORMAL: a commit does not
    // wait for fsync of the WAL, only checkpoints do; a kill -9 of the daemon loses nothing
    // committed (the WAL is in the page cache), a power loss may lose the last transactions —
    // acceptable for a history whose source of truth for points is the repository (a task
    // rolled back to running is marked interrupted at the next start).
    {
        auto mode = db.prepare("PRAGMA journal_mode = WAL");
        if (!mode) return fail(mode.error());
        if (auto row = mode->step(); !row) return fail(row.error());
    }
    if (auto s = db.exec("PRAGMA synchronous = NORMAL;"); !s) return s;

    auto found = schema_version();
    if (!found) return fail(found.error());
    if (*found > kSchemaVersion) {
        return fail(ErrorKind::unsupported,
                    db.file().string() + ": schema version " + std::to_string(*found) +
                        " is newer than this vmshadowd reads (" + std::to_string(kSchemaVersion) +
                        "); run the newer vmshadowd or move the file away");
    }
    if (*found == kSchemaVersion) return {};

    auto tx = Transaction::begin(db);
    if (!tx) return fail(tx.error());
    // Another process may have created the schema while we waited for the lock.
    found = schema_version();
    if (!found) return fail(found.error());
    if (*found == kSchemaVersion) return tx->commit();
    auto objects = count_objects();
    if (!objects) return fail(objects.error());
    if (*objects != 0) {
        return fail(ErrorKind::unsupported,
                    db.file().string() +
                        ": an SQLite database that is not vmshadowd's state (tables but no "
                        "schema version); move it away");
    }
    if (auto s = db.exec(kSchema); !s) return s;
    return tx->commit();
}

Result<std::int64_t> TaskStore::Impl::schema_version() const {
    auto st = db.prepare("PRAGMA user_version");
    if (!st) return fail(st.error());
    if (auto row = st->step(); !row) return fail(row.error());
    return st->int64(0);
}

Result<std::int64_t> TaskStore::Impl::count_objects() const {
    auto st = db.prepare("SELECT count(*) FROM sqlite_schema");
    if (!st) return fail(st.error());
    if (auto row = st->step(); !row) return fail(row.error());
    return st->int64(0);
}

Status TaskStore::Impl::write_progress(std::int64_t id, const Progress& p) {
    auto st = db.prepare(
        "UPDATE tasks SET progress_phase = ?2, progress_item = ?3, bytes_done = ?4, "
        "bytes_total = ?5, items_done = ?6, items_total = ?7 WHERE id = ?1 AND state IN ('queued', "
        "'running')");
    if (!st) return fail(st.error());
    st->bind(1, id).bind(2, std::string_view(p.phase)).bind(3, std::string_view(p.item));
    st->bind(4, to_db(p.bytes_done)).bind(5, to_db(p.bytes_total));
    st->bind(6, to_db(p.items_done)).bind(7, to_db(p.items_total));
    return st->run();
}

void TaskStore::Impl::merge_progress(TaskRecord& task) const {
    auto found = progress.find(task.id);
    if (found != progress.end()) task.progress = found->second.latest;
}

Result<std::optional<TaskRecord>> TaskStore::Impl::get(std::int64_t id) const {
    static const std::string sql = std::string(kTaskColumns) + "WHERE id = ?1";
    auto st = db.prepare(sql.c_str());
    if (!st) return fail(st.error());
    st->bind(1, id);
    auto row = st->step();
    if (!row) return fail(row.error());
    if (!*row) return std::optional<TaskRecord>();
    TaskRecord task = read_task(*st);
    merge_progress(task);
    return std::optional<TaskRecord>(std::move(task));
}

TaskStore::TaskStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TaskStore::~TaskStore() {
    // The latest progress of tasks still running is worth keeping; failures here have no one
    // to report to.
    std::lock_guard lock(impl_->mutex);
    for (const auto& [id, live] : impl_->progress)
        if (live.dirty) (void)impl_->write_progress(id, live.latest);
}

Result<std::unique_ptr<TaskStore>> TaskStore::open(const std::filesystem::path& file,
                                                   const Clock& clock) {
    // SQLite would only say "unable to open database file".
    if (auto folder = file.parent_path(); !folder.empty() && !std::filesystem::is_directory(folder))
        return fail(ErrorKind::not_found,
                    file.string() + ": folder " + folder.string() + " does not exist");
    auto db = SqliteDb::open(file);
    if (!db) return fail(db.error());
    auto impl = std::make_unique<Impl>(std::move(*db), clock);
    if (auto s = impl->init(); !s) return fail(s.error());
    return std::unique_ptr<TaskStore>(new TaskStore(std::move(impl)));
}

Result<std::int64_t> TaskStore::create(std::string_view kind, std::string_view job,
                                       std::string_view target, std::string_view trigger) {
    std::lock_guard lock(impl_->mutex);
    auto st = impl_->db.prepare(
        "INSERT INTO tasks (kind, job, target, trigger, state, queued_at) "
        "VALUES (?1, ?2, ?3, ?4, 'queued', ?5) RETURNING id");
    if (!st) return fail(st.error());
    st->bind(1, kind).bind(2, job).bind(3, target).bind(4, trigger).bind(5, impl_->now());
    auto row = st->step();
    if (!row) return fail(row.error());
    if (!*row) return fail(ErrorKind::internal, "insert of a task returned no id");
    std::int64_t id = st->int64(0);
    if (auto done = st->run(); !done) return fail(done.error());
    return id;
}

Status TaskStore::mark_running(std::int64_t id) {
    std::lock_guard lock(impl_->mutex);
    {
        auto st = impl_->db.prepare(
            "UPDATE tasks SET state = 'running', started_at = ?2 "
            "WHERE id = ?1 AND state = 'queued'");
        if (!st) return fail(st.error());
        if (auto s = st->bind(1, id).bind(2, impl_->now()).run(); !s) return s;
    }
    if (impl_->db.changes() == 1) return {};
    auto task = impl_->get(id);
    if (!task) return fail(task.error());
    if (!*task) return fail(ErrorKind::not_found, "task " + std::to_string(id) + " not found");
    return fail(ErrorKind::conflict, "task " + std::to_string(id) + " is " +
                                         std::string(task_state_name((*task)->state)) +
                                         ", not queued");
}

Status TaskStore::finish(std::int64_t id, TaskState state, std::string_view result_json,
                         const std::optional<Error>& error) {
    if (!task_state_final(state)) {
        return fail(ErrorKind::invalid_argument, "task " + std::to_string(id) +
                                                     ": cannot finish as " +
                                                     std::string(task_state_name(state)));
    }
    std::lock_guard lock(impl_->mutex);
    auto tx = Transaction::begin(impl_->db);
    if (!tx) return fail(tx.error());
    if (auto live = impl_->progress.find(id); live != impl_->progress.end()) {
        if (auto s = impl_->write_progress(id, live->second.latest); !s) return s;
    }
    {
        auto st = impl_->db.prepare(
            "UPDATE tasks SET state = ?2, ended_at = ?3, result = ?4, error = ?5, error_kind = ?6 "
            "WHERE id = ?1 AND state IN ('queued', 'running')");
        if (!st) return fail(st.error());
        st->bind(1, id).bind(2, task_state_name(state)).bind(3, impl_->now());
        st->bind(4, std::string_view(bounded_result(result_json)));
        st->bind(5, error ? cut_utf8(error->message(), kMaxErrorBytes) : std::string_view());
        st->bind(6, error ? kind_name(error->kind()) : std::string_view());
        if (auto s = st->run(); !s) return s;
    }
    if (impl_->db.changes() != 1) {
        auto task = impl_->get(id);
        if (!task) return fail(task.error());
        if (!*task) return fail(ErrorKind::not_found, "task " + std::to_string(id) + " not found");
        return fail(ErrorKind::conflict, "task " + std::to_string(id) + " already ended (" +
                                             std::string(task_state_name((*task)->state)) + ")");
    }
    if (auto s = tx->commit(); !s) return s;
    impl_->progress.erase(id);
    return {};
}

void TaskStore::set_progress(std::int64_t id, const Progress& progress) {
    std::lock_guard lock(impl_->mutex);
    auto now = impl_->clock->now();
    auto [live, first] = impl_->progress.try_emplace(id);
    live->second.latest = progress;
    live->second.dirty = true;
    bool due =
        first || now < live->second.written || now - live->second.written >= kProgressInterval;
    if (!due) return;
    // A failed write (a busy database) stays dirty and is retried by the next update; there
    // is no one to report it to, and progress is advisory.
    if (!impl_->write_progress(id, progress)) return;
    if (impl_->db.changes() == 0) {
        impl_->progress.erase(live);  // no such task, or it has ended
        return;
    }
    live->second.written = now;
    live->second.dirty = false;
}

Result<std::int64_t> TaskStore::append_log(std::int64_t id, LogLevel level, std::string_view text) {
    std::lock_guard lock(impl_->mutex);
    auto tx = Transaction::begin(impl_->db);
    if (!tx) return fail(tx.error());
    std::int64_t count = 0;
    {
        auto st = impl_->db.prepare("SELECT log_lines FROM tasks WHERE id = ?1");
        if (!st) return fail(st.error());
        auto row = st->bind(1, id).step();
        if (!row) return fail(row.error());
        if (!*row) return fail(ErrorKind::not_found, "task " + std::to_string(id) + " not found");
        count = st->int64(0);
    }
    if (count > kMaxLogLines) return 0;  // full: the truncation line is already there
    std::int64_t number = count + 1;
    std::string line = bounded_line(text);
    if (count == kMaxLogLines) {
        level = LogLevel::warning;
        line = "log truncated: a task keeps " + std::to_string(kMaxLogLines) +
               " lines; later lines were dropped";
    }
    {
        auto st = impl_->db.prepare(
            "INSERT INTO task_log (task, line, time, level, text) VALUES (?1, ?2, ?3, ?4, ?5)");
        if (!st) return fail(st.error());
        st->bind(1, id).bind(2, number).bind(3, impl_->now()).bind(4, kLevelNames.name(level));
        if (auto s = st->bind(5, std::string_view(line)).run(); !s) return fail(s.error());
    }
    {
        auto st = impl_->db.prepare("UPDATE tasks SET log_lines = ?2 WHERE id = ?1");
        if (!st) return fail(st.error());
        if (auto s = st->bind(1, id).bind(2, number).run(); !s) return fail(s.error());
    }
    if (auto s = tx->commit(); !s) return fail(s.error());
    return count == kMaxLogLines ? 0 : number;
}

Result<std::optional<TaskRecord>> TaskStore::get(std::int64_t id) const {
    std::lock_guard lock(impl_->mutex);
    return impl_->get(id);
}

Result<std::vector<TaskRecord>> TaskStore::list(const TaskFilter& filter) const {
    static const std::string sql =
        std::string(kTaskColumns) +
        "WHERE (?1 IS NULL OR state = ?1) AND (?2 = '' OR job = ?2) AND (?3 = '' OR kind = ?3) "
        "AND (?4 IS NULL OR id < ?4) ORDER BY id DESC LIMIT ?5";
    std::lock_guard lock(impl_->mutex);
    auto st = impl_->db.prepare(sql.c_str());
    if (!st) return fail(st.error());
    if (filter.state) {
        st->bind(1, task_state_name(*filter.state));
    } else {
        st->bind_null(1);
    }
    st->bind(2, std::string_view(filter.job)).bind(3, std::string_view(filter.kind));
    st->bind(4, filter.before_id).bind(5, to_db(filter.limit));
    std::vector<TaskRecord> tasks;
    for (;;) {
        auto row = st->step();
        if (!row) return fail(row.error());
        if (!*row) break;
        tasks.push_back(read_task(*st));
        impl_->merge_progress(tasks.back());
    }
    return tasks;
}

Result<std::vector<LogLine>> TaskStore::log(std::int64_t id, std::int64_t start,
                                            std::size_t limit) const {
    std::lock_guard lock(impl_->mutex);
    {
        auto st = impl_->db.prepare("SELECT 1 FROM tasks WHERE id = ?1");
        if (!st) return fail(st.error());
        auto row = st->bind(1, id).step();
        if (!row) return fail(row.error());
        if (!*row) return fail(ErrorKind::not_found, "task " + std::to_string(id) + " not found");
    }
    auto st = impl_->db.prepare(
        "SELECT line, time, level, text FROM task_log WHERE task = ?1 AND line >= ?2 "
        "ORDER BY line LIMIT ?3");
    if (!st) return fail(st.error());
    st->bind(1, id).bind(2, start).bind(3, to_db(limit));
    std::vector<LogLine> lines;
    for (;;) {
        auto row = st->step();
        if (!row) return fail(row.error());
        if (!*row) break;
        lines.push_back(LogLine{.number = st->int64(0),
                                .time = st->int64(1),
                                .level = kLevelNames.parse(st->text(2)).value_or(LogLevel::info),
                                .text = st->text(3)});
    }
    return lines;
}

// The kind of an interrupted task's error is `unavailable`: the service running it went away
// (crash, kill -9, reboot), which is transient — running it again is the remedy — and not
// `cancelled`, which says someone chose to stop it.
Result<std::vector<TaskRecord>> TaskStore::mark_interrupted() {
    static const std::string sql =
        std::string(kTaskColumns) + "WHERE state IN ('queued', 'running') ORDER BY id";
    std::lock_guard lock(impl_->mutex);
    auto tx = Transaction::begin(impl_->db);
    if (!tx) return fail(tx.error());
    std::vector<TaskRecord> tasks;
    {
        auto st = impl_->db.prepare(sql.c_str());
        if (!st) return fail(st.error());
        for (;;) {
            auto row = st->step();
            if (!row) return fail(row.error());
            if (!*row) break;
            tasks.push_back(read_task(*st));
        }
    }
    std::int64_t now = impl_->now();
    auto kind = kind_name(ErrorKind::unavailable);
    {
        auto st = impl_->db.prepare(
            "UPDATE tasks SET state = 'interrupted', ended_at = ?1, error = ?2, error_kind = ?3 "
            "WHERE state IN ('queued', 'running')");
        if (!st) return fail(st.error());
        if (auto s = st->bind(1, now).bind(2, kInterruptedMessage).bind(3, kind).run(); !s)
            return fail(s.error());
    }
    if (auto s = tx->commit(); !s) return fail(s.error());
    for (auto& task : tasks) {
        task.state = TaskState::interrupted;
        task.ended_at = now;
        task.error = kInterruptedMessage;
        task.error_kind = kind;
        impl_->progress.erase(task.id);
    }
    return tasks;
}

Status TaskStore::prune_history(std::size_t keep_count, std::chrono::seconds keep_age) {
    std::lock_guard lock(impl_->mutex);
    std::int64_t cutoff = impl_->now() - keep_age.count();
    auto tx = Transaction::begin(impl_->db);
    if (!tx) return fail(tx.error());
    // One condition, in both statements: ended, and either too old or beyond the newest
    // keep_count ended tasks. Logs go first, while their tasks still say which to delete.
    static constexpr const char* kDeleteLogs =
        "DELETE FROM task_log WHERE task IN (SELECT id FROM tasks WHERE state NOT IN "
        "('queued', 'running') AND (ended_at < ?1 OR id NOT IN (SELECT id FROM tasks WHERE "
        "state NOT IN ('queued', 'running') ORDER BY id DESC LIMIT ?2)))";
    static constexpr const char* kDeleteTasks =
        "DELETE FROM tasks WHERE state NOT IN ('queued', 'running') AND (ended_at < ?1 OR id "
        "NOT IN (SELECT id FROM tasks WHERE state NOT IN ('queued', 'running') ORDER BY id "
        "DESC LIMIT ?2))";
    for (const char* sql : {kDeleteLogs, kDeleteTasks}) {
        auto st = impl_->db.prepare(sql);
        if (!st) return fail(st.error());
        if (auto s = st->bind(1, cutoff).bind(2, to_db(keep_count)).run(); !s) return s;
    }
    return tx->commit();
}

Result<JobScheduleState> TaskStore::job_state(std::string_view job) const {
    std::lock_guard lock(impl_->mutex);
    auto st = impl_->db.prepare(
        "SELECT last_slot, last_success, last_task FROM job_state WHERE job = ?1");
    if (!st) return fail(st.error());
    auto row = st->bind(1, job).step();
    if (!row) return fail(row.error());
    if (!*row) return JobScheduleState{};
    return JobScheduleState{.last_slot = st->optional_int64(0),
                            .last_success = st->optional_int64(1),
                            .last_task = st->optional_int64(2)};
}

Status TaskStore::set_job_slot(std::string_view job, std::int64_t slot) {
    std::lock_guard lock(impl_->mutex);
    auto st = impl_->db.prepare(
        "INSERT INTO job_state (job, last_slot) VALUES (?1, ?2) "
        "ON CONFLICT (job) DO UPDATE SET last_slot = excluded.last_slot");
    if (!st) return fail(st.error());
    return st->bind(1, job).bind(2, slot).run();
}

Status TaskStore::set_job_success(std::string_view job, std::int64_t when) {
    std::lock_guard lock(impl_->mutex);
    auto st = impl_->db.prepare(
        "INSERT INTO job_state (job, last_success) VALUES (?1, ?2) "
        "ON CONFLICT (job) DO UPDATE SET last_success = excluded.last_success");
    if (!st) return fail(st.error());
    return st->bind(1, job).bind(2, when).run();
}

Status TaskStore::set_job_last_task(std::string_view job, std::int64_t task) {
    std::lock_guard lock(impl_->mutex);
    auto st = impl_->db.prepare(
        "INSERT INTO job_state (job, last_task) VALUES (?1, ?2) "
        "ON CONFLICT (job) DO UPDATE SET last_task = excluded.last_task");
    if (!st) return fail(st.error());
    return st->bind(1, job).bind(2, task).run();
}

Result<std::vector<VmBackupState>> TaskStore::vm_states() const {
    std::lock_guard lock(impl_->mutex);
    auto st = impl_->db.prepare(
        "SELECT vm, last_success, last_duration_s, last_bytes_added, last_freeze_ms, last_point, "
        "last_consistency, failures_total, last_failure FROM vm_state ORDER BY vm");
    if (!st) return fail(st.error());
    std::vector<VmBackupState> vms;
    for (;;) {
        auto row = st->step();
        if (!row) return fail(row.error());
        if (!*row) break;
        vms.push_back(VmBackupState{.vm = st->text(0),
                                    .last_success = st->int64(1),
                                    .last_duration_s = st->real(2),
                                    .last_bytes_added = from_db(st->int64(3)),
                                    .last_freeze_ms = st->int64(4),
                                    .last_point = st->text(5),
                                    .last_consistency = st->text(6),
                                    .failures_total = from_db(st->int64(7)),
                                    .last_failure = st->int64(8)});
    }
    return vms;
}

Status TaskStore::record_vm_success(const VmBackupState& s) {
    std::lock_guard lock(impl_->mutex);
    // The failure count is a total over time (a Prometheus counter): success does not reset it.
    auto st = impl_->db.prepare(
        "INSERT INTO vm_state (vm, last_success, last_duration_s, last_bytes_added, "
        "last_freeze_ms, last_point, last_consistency) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
        "ON CONFLICT (vm) DO UPDATE SET last_success = excluded.last_success, "
        "last_duration_s = excluded.last_duration_s, last_bytes_added = "
        "excluded.last_bytes_added, last_freeze_ms = excluded.last_freeze_ms, last_point = "
        "excluded.last_point, last_consistency = excluded.last_consistency");
    if (!st) return fail(st.error());
    st->bind(1, std::string_view(s.vm)).bind(2, s.last_success).bind(3, s.last_duration_s);
    st->bind(4, to_db(s.last_bytes_added)).bind(5, s.last_freeze_ms);
    st->bind(6, std::string_view(s.last_point)).bind(7, std::string_view(s.last_consistency));
    return st->run();
}

Status TaskStore::record_vm_failure(std::string_view vm, std::int64_t when) {
    std::lock_guard lock(impl_->mutex);
    auto st = impl_->db.prepare(
        "INSERT INTO vm_state (vm, failures_total, last_failure) VALUES (?1, 1, ?2) "
        "ON CONFLICT (vm) DO UPDATE SET failures_total = failures_total + 1, "
        "last_failure = excluded.last_failure");
    if (!st) return fail(st.error());
    return st->bind(1, vm).bind(2, when).run();
}

}  // namespace vmshadow::daemon
