// SPDX-License-Identifier: MIT
#pragma once
// Error: the one error value that crosses layer boundaries in vmshadow.
//
// This module is: a small closed set of error kinds plus a message fit for a user, and
// `Result<T>` (std::expected) / `Status` built on it. Each layer adds context as the error
// travels up ("vm 'web1': agent freeze: ..."), so the message the CLI prints names the
// thing that failed and, where we know it, what to do about it.
// This module is not: an exception hierarchy, a logger, or the mapping to exit codes
// (that lives in one place, src/cli/exit_code.h).
//
// Thread-safety: plain values; copy freely.

#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace vmshadow {

enum class ErrorKind {
    internal,          // a bug or an impossible state
    invalid_argument,  // the user asked for something malformed
    not_found,         // a VM, disk, restore point or file does not exist
    unavailable,       // a service did not answer: libvirtd, the guest agent, an NBD server
    timeout,           // an operation ran past its deadline
    conflict,          // the target is in use or exists (name taken, VM running, job active)
    locked,            // another vmshadow process holds a lock we need
    corruption,        // stored data failed a check
    io,                // the filesystem or a device failed (includes a full disk)
    unsupported,       // the platform or a format version cannot do what was asked
    permission,        // wrong password, missing rights
    cancelled,         // a writer vetoed, or the user interrupted
};

// A short stable name of the kind, used in --json output ("not_found").
std::string_view kind_name(ErrorKind kind);
std::optional<ErrorKind> parse_kind_name(std::string_view name);

class Error {
  public:
    Error(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {}

    ErrorKind kind() const { return kind_; }
    const std::string& message() const { return message_; }

    // Returns a copy whose message is "<context>: <message>".
    Error with_context(std::string_view context) const;

  private:
    ErrorKind kind_;
    std::string message_;
};

template <typename T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

inline std::unexpected<Error> fail(ErrorKind kind, std::string message) {
    return std::unexpected<Error>(Error(kind, std::move(message)));
}

inline std::unexpected<Error> fail(Error error) {
    return std::unexpected<Error>(std::move(error));
}

// Adds context to the error of a failed result; passes success through untouched.
template <typename T>
Result<T> with_context(Result<T> result, std::string_view context) {
    if (!result) return std::unexpected<Error>(result.error().with_context(context));
    return result;
}

}  // namespace vmshadow
