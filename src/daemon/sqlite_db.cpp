// SPDX-License-Identifier: MIT
#include "daemon/sqlite_db.h"

#include <limits>
#include <utility>

namespace vmshadow::daemon {

namespace {

ErrorKind kind_of(int code) {
    switch (code & 0xff) {
        case SQLITE_NOTADB:
        case SQLITE_CORRUPT:
            return ErrorKind::corruption;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
            return ErrorKind::locked;
        case SQLITE_FULL:
        case SQLITE_IOERR:
        case SQLITE_CANTOPEN:
            return ErrorKind::io;
        case SQLITE_PERM:
        case SQLITE_READONLY:
        case SQLITE_AUTH:
            return ErrorKind::permission;
        case SQLITE_TOOBIG:
        case SQLITE_RANGE:
            return ErrorKind::invalid_argument;
        case SQLITE_CONSTRAINT:
            return ErrorKind::conflict;
        default:
            return ErrorKind::internal;
    }
}

}  // namespace

Statement::~Statement() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
}

Statement& Statement::bind(int index, std::int64_t value) {
    int rc = sqlite3_bind_int64(stmt_, index, value);
    if (rc != SQLITE_OK && bind_status_) bind_status_ = fail(db_->error(rc, "bind"));
    return *this;
}

Statement& Statement::bind(int index, double value) {
    int rc = sqlite3_bind_double(stmt_, index, value);
    if (rc != SQLITE_OK && bind_status_) bind_status_ = fail(db_->error(rc, "bind"));
    return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
    // SQLITE_TRANSIENT: SQLite copies, so the caller's buffer may go away before step().
    // A null data pointer would bind NULL, not the empty text an empty view means.
    const char* data = text.data() != nullptr ? text.data() : "";
    int rc = sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    if (rc != SQLITE_OK && bind_status_) bind_status_ = fail(db_->error(rc, "bind"));
    return *this;
}

Statement& Statement::bind(int index, std::optional<std::int64_t> value) {
    return value ? bind(index, *value) : bind_null(index);
}

Statement& Statement::bind_null(int index) {
    int rc = sqlite3_bind_null(stmt_, index);
    if (rc != SQLITE_OK && bind_status_) bind_status_ = fail(db_->error(rc, "bind"));
    return *this;
}

Result<bool> Statement::step() {
    if (!bind_status_) return fail(bind_status_.error());
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return fail(db_->error(rc, "query"));
}

Status Statement::run() {
    for (;;) {
        auto row = step();
        if (!row) return fail(row.error());
        if (!*row) return {};
    }
}

std::int64_t Statement::int64(int column) const {
    return sqlite3_column_int64(stmt_, column);
}

double Statement::real(int column) const {
    return sqlite3_column_double(stmt_, column);
}

std::string Statement::text(int column) const {
    const auto* data = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    if (data == nullptr) return {};
    return std::string(data, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::optional<std::int64_t> Statement::optional_int64(int column) const {
    if (sqlite3_column_type(stmt_, column) == SQLITE_NULL) return std::nullopt;
    return sqlite3_column_int64(stmt_, column);
}

Result<SqliteDb> SqliteDb::open(const std::filesystem::path& file) {
    sqlite3* raw = nullptr;
    int rc =
        sqlite3_open_v2(file.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    SqlitePtr db(raw);  // sqlite3_open_v2 hands a handle to close even when it fails
    if (rc != SQLITE_OK) {
        std::string why = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
        return fail(kind_of(rc), file.string() + ": open: " + why);
    }
    sqlite3_extended_result_codes(raw, 1);
    // Before the first statement: switching to WAL itself briefly needs the lock another
    // process (a second daemon start, a test's reader) may hold.
    sqlite3_busy_timeout(raw, 5000);
    return SqliteDb(file, std::move(db));
}

Result<Statement> SqliteDb::prepare(const char* sql) const {
    auto found = cache_.find(sql);
    if (found == cache_.end()) {
        sqlite3_stmt* raw = nullptr;
        int rc = sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
        SqliteStmtPtr stmt(raw);
        if (rc != SQLITE_OK) return fail(error(rc, "prepare"));
        found = cache_.emplace(sql, std::move(stmt)).first;
    }
    return Result<Statement>(std::in_place, *this, found->second.get());
}

Status SqliteDb::exec(const char* sql) const {
    int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return fail(error(rc, "exec"));
    return {};
}

Error SqliteDb::error(int code, std::string_view what) const {
    std::string message = sqlite3_errmsg(db_.get());
    if (message.empty() || message == "not an error") message = sqlite3_errstr(code);
    return Error(kind_of(code), file_.string() + ": " + std::string(what) + ": " + message);
}

Result<Transaction> Transaction::begin(const SqliteDb& db) {
    if (auto begun = db.exec("BEGIN IMMEDIATE"); !begun) return fail(begun.error());
    return Transaction(db);
}

Transaction::~Transaction() {
    // Best effort: a failed rollback leaves SQLite to roll back when the connection closes.
    if (db_ != nullptr) (void)db_->exec("ROLLBACK");
}

Status Transaction::commit() {
    if (auto done = db_->exec("COMMIT"); !done) return done;
    db_ = nullptr;
    return {};
}

}  // namespace vmshadow::daemon
