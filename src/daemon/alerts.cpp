// SPDX-License-Identifier: MIT
#include "daemon/alerts.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "common/child_process.h"
#include "common/process.h"
#include "common/time_format.h"
#include "common/unique_fd.h"

namespace vmshadow::daemon {
namespace {

// A header value on one line: CR and LF (a header injection) and every other control
// character become spaces; bounded far below RFC 5322's 998-byte line.
std::string header_value(std::string_view text) {
    std::string out(text.substr(0, 900));
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    return out;
}

// RFC 2047 "encoded-word" for a value that is not plain ASCII.
std::string encoded_word(const std::string& value) {
    bool ascii = std::all_of(value.begin(), value.end(),
                             [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (ascii) return value;
    std::string b64(4 * ((value.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                            reinterpret_cast<const unsigned char*>(value.data()),
                            static_cast<int>(value.size()));
    b64.resize(static_cast<std::size_t>(n));
    return "=?UTF-8?B?" + b64 + "?=";
}

// RFC 5322 date, independent of the process's locale.
std::string mail_date(std::int64_t unix_seconds) {
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int day = std::stoi(format_utc(unix_seconds, "%w"));
    int month = std::stoi(format_utc(unix_seconds, "%m"));
    return std::string(kDays[day % 7]) + ", " + format_utc(unix_seconds, "%d ") +
           kMonths[(month + 11) % 12] + format_utc(unix_seconds, " %Y %H:%M:%S +0000");
}

std::string summary(const Alert& a) {
    std::string vm = a.vm.empty() ? "" : " (VM " + a.vm + ")";
    if (a.event == "no_recent_backup")
        return "no recent successful backup of VM " + a.vm + " (job " + a.job + ")";
    if (a.event == "task_failed") return "job " + a.job + " failed" + vm;
    if (a.event == "task_ended") return "job " + a.job + " ended " + a.state + vm;
    return a.event + ": job " + a.job + vm;
}

std::string describe(const Alert& a) {
    std::string out = "alert " + a.event + " (job " + a.job;
    if (!a.vm.empty()) out += ", vm " + a.vm;
    if (a.task) out += ", task " + std::to_string(*a.task);
    return out + ")";
}

// A private temporary file holding the mail, removed when it goes out of scope.
class MessageFile {
  public:
    Status write(std::string_view message) {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "vmshadow-alert-XXXXXX").string();
        UniqueFd fd(::mkstemp(tmpl.data()));  // mode 0600
        if (!fd)
            return fail(ErrorKind::io, "cannot create a temporary file for the alert mail: " +
                                           std::string(std::strerror(errno)));
        path_ = tmpl;
        while (!message.empty()) {
            ssize_t n = ::write(fd.get(), message.data(), message.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0)
                return fail(ErrorKind::io, "cannot write " + path_ + ": " + std::strerror(errno));
            message.remove_prefix(static_cast<std::size_t>(n));
        }
        return {};
    }
    const std::string& path() const { return path_; }
    ~MessageFile() {
        if (!path_.empty()) ::unlink(path_.c_str());
    }

  private:
    std::string path_;
};

std::string millis(std::chrono::milliseconds d) {
    return d.count() % 1000 == 0 ? std::to_string(d.count() / 1000) + " s"
                                 : std::to_string(d.count()) + " ms";
}

}  // namespace

nlohmann::json alert_body(const Alert& alert, std::string_view host) {
    return {{"event", alert.event},
            {"time", alert.time},
            {"host", host},
            {"job", alert.job},
            {"vm", alert.vm},
            {"task", alert.task ? nlohmann::json(*alert.task) : nlohmann::json(nullptr)},
            {"state", alert.state},
            {"message", alert.message}};
}

std::string alert_mail_message(const Alert& alert, std::string_view host, std::string_view to) {
    std::string subject = header_value("vmshadow: " + std::string(host) + ": " + summary(alert));
    std::string out;
    out += "To: " + header_value(to) + "\n";
    out += "Subject: " + encoded_word(subject) + "\n";
    out += "Date: " + mail_date(alert.time) + "\n";
    out += "MIME-Version: 1.0\n";
    out += "Content-Type: text/plain; charset=UTF-8\n";
    out += "Content-Transfer-Encoding: 8bit\n";
    out += "Auto-Submitted: auto-generated\n";
    out += "\n";
    std::string body = alert.message;
    std::erase(body, '\r');
    out += body + "\n\n";
    auto field = [&](std::string_view name, const std::string& value) {
        out += std::string(name) + ": " + header_value(value) + "\n";
    };
    field("Event", alert.event);
    field("Host", std::string(host));
    field("Job", alert.job);
    if (!alert.vm.empty()) field("VM", alert.vm);
    if (alert.task) field("Task", std::to_string(*alert.task));
    if (!alert.state.empty()) field("State", alert.state);
    field("Time", iso8601_utc(alert.time));
    return out;
}

Status sendmail_message(const std::filesystem::path& sendmail, std::string_view message,
                        std::chrono::milliseconds timeout) {
    // run_tool gives a child no stdin, so a fixed shell line redirects it from a private
    // file; the sendmail path and the file are arguments ($0, $1), never parsed as shell.
    MessageFile file;
    if (auto written = file.write(message); !written) return written;
    const std::string program = sendmail.string();
    auto run =
        run_tool({"/bin/sh", "-c", "exec \"$0\" -t -oi < \"$1\"", program, file.path()}, timeout);
    if (!run) return fail(run.error().with_context(program));
    if (run->exit_code == 126 || run->exit_code == 127)
        return fail(ErrorKind::unavailable,
                    program + " could not be run (is a mail transfer agent installed?)");
    if (run->exit_code != 0) {
        std::string why = last_line_of(run->err);
        return fail(ErrorKind::unavailable, program + " -t -oi exited with " +
                                                std::to_string(run->exit_code) +
                                                (why.empty() ? "" : ": " + why));
    }
    return {};
}

AlertSender::AlertSender(AlertTargets targets, std::string host_name, AlertTransport& transport,
                         Log log, AlertOptions options)
    : transport_(transport),
      targets_(std::move(targets)),
      host_(std::move(host_name)),
      log_(std::move(log)),
      options_(options) {
    options_.max_attempts = std::max(options_.max_attempts, 1u);
    options_.max_queued = std::max<std::size_t>(options_.max_queued, 1);
    thread_ = std::thread([this] { run(); });
}

AlertSender::~AlertSender() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
    for (const auto& alert : queue_)
        log_(LogLevel::warning, describe(alert) + ": dropped, the daemon is stopping");
}

void AlertSender::send(Alert alert) {
    std::optional<Alert> dropped;
    {
        std::lock_guard lock(mutex_);
        if (queue_.size() >= options_.max_queued) {
            dropped = std::move(queue_.front());
            queue_.pop_front();
        }
        queue_.push_back(std::move(alert));
    }
    wake_.notify_all();
    if (dropped)
        log_(LogLevel::warning, describe(*dropped) + ": dropped, " +
                                    std::to_string(options_.max_queued) +
                                    " newer alerts are waiting");
}

void AlertSender::set_targets(AlertTargets targets) {
    std::lock_guard lock(mutex_);
    targets_ = std::move(targets);
}

bool AlertSender::backoff(std::chrono::milliseconds delay) {
    std::unique_lock lock(mutex_);
    return !wake_.wait_for(lock, delay, [this] { return stopping_; });
}

void AlertSender::deliver(const Alert& alert, std::string_view target,
                          const std::function<Status()>& post) {
    const std::string what = describe(alert) + ": " + std::string(target);
    auto delay = options_.first_retry;
    for (unsigned attempt = 1;; ++attempt) {
        auto status = post();
        if (status) {
            log_(LogLevel::info,
                 what + " delivered" +
                     (attempt > 1 ? " (attempt " + std::to_string(attempt) + ")" : std::string()));
            return;
        }
        const std::string& error = status.error().message();
        if (attempt >= options_.max_attempts) {
            log_(LogLevel::error, what + " not delivered, gave up after " +
                                      std::to_string(attempt) + " attempts: " + error);
            return;
        }
        log_(LogLevel::warning, what + " attempt " + std::to_string(attempt) + " of " +
                                    std::to_string(options_.max_attempts) + " failed: " + error +
                                    "; retrying in " + millis(delay));
        if (!backoff(delay)) {
            log_(LogLevel::warning, what + " not delivered: the daemon is stopping");
            return;
        }
        delay = std::min<std::chrono::milliseconds>(delay * 2, std::chrono::hours(1));
    }
}

void AlertSender::run() {
    for (;;) {
        Alert alert;
        AlertTargets targets;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (stopping_) return;
            alert = std::move(queue_.front());
            queue_.pop_front();
            targets = targets_;
        }
        if (targets.webhook.empty() && targets.email.empty()) {
            log_(LogLevel::info,
                 describe(alert) + ": no alert target configured: " + alert.message);
            continue;
        }
        if (!targets.webhook.empty()) {
            const std::string body =
                alert_body(alert, host_)
                    .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
            deliver(alert, "webhook",
                    [&] { return transport_.post_webhook(targets, body, options_.timeout); });
        }
        bool stopping;
        {
            std::lock_guard lock(mutex_);
            stopping = stopping_;
        }
        if (!targets.email.empty() && !stopping) {
            const std::string message = alert_mail_message(alert, host_, targets.email);
            deliver(alert, "email to " + targets.email,
                    [&] { return transport_.send_mail(targets, message, options_.timeout); });
        }
    }
}

}  // namespace vmshadow::daemon
