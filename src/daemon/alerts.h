// SPDX-License-Identifier: MIT
#pragma once
// AlertSender: tells people when something needs them — a job's run failed (or ended, with
// notify = always), or a VM has had no successful backup for longer than its job allows
// (fired by the daemon's watch even when the job never ran: the silent failure of cron
// setups).
//
// This module is: a bounded queue of alerts and one thread that delivers each to the
// configured targets — a webhook (JSON POST, see below; retried with exponential backoff
// 1 s, 2 s, 4 s ... up to 6 attempts, a 2xx ends it) and email through the host's sendmail
// (`sendmail -t -oi`, the message on stdin, bounded by a deadline); the outcome of each
// delivery goes to the log callback. A full queue drops the oldest alert (and logs it).
// Webhook body: {"event": "task_failed|task_ended|no_recent_backup", "time": unix s,
//   "host", "job", "vm", "task": id|null, "state", "message"}.
// It is not: the decision *when* to alert (the daemon's), or a retry store that survives a
// restart.
//
// Deliveries go through an AlertTransport (alert_transport.h): NetAlertTransport in the
// daemon, a fake in tests. Webhook and email are retried independently, each with the
// backoff above (first_retry, doubling, max_attempts); a wait for a retry ends at once when
// the sender is destroyed.
// Email: alert_mail_message below — To, Subject "vmshadow: HOST: ...", Date, MIME-Version,
// Content-Type text/plain; charset=UTF-8; every header value has CR, LF and other control
// characters replaced by spaces (no header injection through a job, VM or message text) and a
// non-ASCII subject is RFC 2047 encoded.
//
// Thread-safety: send() from any thread; the destructor stops the thread after at most the
// current attempt (pending alerts are logged as dropped).

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "common/clock.h"
#include "common/task.h"
#include "daemon/alert_transport.h"
#include "daemon/job_config.h"

namespace vmshadow::daemon {

struct Alert {
    std::string event;  // "task_failed", "task_ended", "no_recent_backup"
    std::int64_t time = 0;
    std::string job;
    std::string vm;
    std::optional<std::int64_t> task;
    std::string state;
    std::string message;  // one line for people
};

struct AlertOptions {
    std::chrono::milliseconds first_retry{1000};
    unsigned max_attempts = 6;
    std::size_t max_queued = 100;
    std::chrono::milliseconds timeout{10000};  // per attempt
};

// The webhook's JSON body (the fields above; invalid UTF-8 in a text is replaced, not fatal).
nlohmann::json alert_body(const Alert& alert, std::string_view host);
// The complete mail for sendmail -t: headers, a blank line, the body; Date from alert.time.
std::string alert_mail_message(const Alert& alert, std::string_view host, std::string_view to);

// Hands `message` to `SENDMAIL -t -oi` on its stdin (NetAlertTransport's mail); past
// `timeout` sendmail is killed and a timeout returned; a non-zero exit is unavailable with
// the last line of its stderr.
Status sendmail_message(const std::filesystem::path& sendmail, std::string_view message,
                        std::chrono::milliseconds timeout);

class AlertSender {
  public:
    using Log = std::function<void(LogLevel, std::string_view)>;
    // `transport` must outlive the sender.
    AlertSender(AlertTargets targets, std::string host_name, AlertTransport& transport, Log log,
                AlertOptions options = {});
    ~AlertSender();
    AlertSender(const AlertSender&) = delete;
    AlertSender& operator=(const AlertSender&) = delete;

    void send(Alert alert);
    // A reloaded config's targets, for alerts sent from now on.
    void set_targets(AlertTargets targets);

  private:
    void run();
    void deliver(const Alert& alert, std::string_view target, const std::function<Status()>& post);
    // Waits `delay` unless the sender is stopping; false when it is.
    bool backoff(std::chrono::milliseconds delay);

    AlertTransport& transport_;
    AlertTargets targets_;
    std::string host_;
    Log log_;
    AlertOptions options_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Alert> queue_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace vmshadow::daemon
