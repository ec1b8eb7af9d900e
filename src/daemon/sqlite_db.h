// SPDX-License-Identifier: MIT
#pragma once
// SqliteDb: the small RAII layer over SQLite's C API that the task store uses — one owned
// connection, prepared statements kept for the connection's life, and an IMMEDIATE
// transaction that rolls back unless committed. Every SQLite failure becomes an Error whose
// kind fits (a file that is not a database is corruption, a full disk io, a busy database
// locked) and whose message names the database file.
//
// This module is: SqliteDb (open, prepare, exec of constant SQL), Statement (bind, step,
// column), Transaction.
// It is not: a query builder — SQL is constant text; values go through bind() only.
//
// Thread-safety: none; the owner serializes all use of one SqliteDb (TaskStore's mutex).

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/error.h"

namespace vmshadow::daemon {

struct SqliteCloser {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct SqliteFinalizer {
    void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using SqlitePtr = std::unique_ptr<sqlite3, SqliteCloser>;
using SqliteStmtPtr = std::unique_ptr<sqlite3_stmt, SqliteFinalizer>;

class SqliteDb;

// A prepared statement borrowed from the connection's cache; reset and unbound when it goes
// out of scope, so the next user starts clean. Parameters and columns count from 1 and 0, as
// in SQLite.
class Statement {
  public:
    Statement(const SqliteDb& db, sqlite3_stmt* stmt) : db_(&db), stmt_(stmt) {}
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    ~Statement();

    Statement& bind(int index, std::int64_t value);
    Statement& bind(int index, double value);
    Statement& bind(int index, std::string_view text);
    Statement& bind(int index, std::optional<std::int64_t> value);
    Statement& bind_null(int index);

    // true: a row is ready to read; false: done.
    Result<bool> step();
    // Runs a statement that returns no rows (or ignores them).
    Status run();

    std::int64_t int64(int column) const;
    double real(int column) const;
    std::string text(int column) const;
    std::optional<std::int64_t> optional_int64(int column) const;

  private:
    const SqliteDb* db_;
    sqlite3_stmt* stmt_;
    Status bind_status_;
};

class SqliteDb {
  public:
    // Opens or creates the file; SQLite reads nothing yet (a garbage file fails at the
    // first statement).
    static Result<SqliteDb> open(const std::filesystem::path& file);

    // `sql` must live as long as the connection (a literal or a static): the cache is keyed
    // by its address.
    Result<Statement> prepare(const char* sql) const;
    // Runs constant SQL (schema, pragmas) without binding anything.
    Status exec(const char* sql) const;
    std::int64_t changes() const { return sqlite3_changes64(db_.get()); }

    // The error of the last failed call as an Error naming the file.
    Error error(int code, std::string_view what) const;
    const std::filesystem::path& file() const { return file_; }

  private:
    SqliteDb(std::filesystem::path file, SqlitePtr db)
        : file_(std::move(file)), db_(std::move(db)) {}

    std::filesystem::path file_;
    SqlitePtr db_;
    mutable std::unordered_map<const char*, SqliteStmtPtr> cache_;
};

// BEGIN IMMEDIATE: the write lock is taken at once (after busy_timeout at most), so two
// writers never deadlock upgrading a read. Rolled back unless commit() succeeded.
class Transaction {
  public:
    static Result<Transaction> begin(const SqliteDb& db);
    Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
    Transaction& operator=(Transaction&&) = delete;
    ~Transaction();
    Status commit();

  private:
    explicit Transaction(const SqliteDb& db) : db_(&db) {}
    const SqliteDb* db_;
};

}  // namespace vmshadow::daemon
