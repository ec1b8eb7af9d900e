// SPDX-License-Identifier: MIT
#include "daemon/alerts.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace vmshadow::daemon {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// Records every delivery; the webhook fails `webhook_failures` times first (-1: always), and
// while `hold` is set a post waits until it is cleared.
class FakeTransport final : public AlertTransport {
  public:
    Status post_webhook(const AlertTargets& targets, std::string_view json_body,
                        std::chrono::milliseconds timeout) override {
        std::unique_lock lock(mutex_);
        posts.push_back({std::string(json_body), SteadyClock::now()});
        webhook_urls.push_back(targets.webhook);
        last_timeout = timeout;
        changed_.notify_all();
        changed_.wait(lock, [this] { return !hold; });
        int failures = webhook_failures;
        if (failures < 0 || static_cast<int>(posts.size()) <= failures)
            return fail(ErrorKind::unavailable, "webhook answered 503 Service Unavailable");
        return {};
    }
    Status send_mail(const AlertTargets&, std::string_view message,
                     std::chrono::milliseconds) override {
        std::lock_guard lock(mutex_);
        mails.emplace_back(message);
        changed_.notify_all();
        return {};
    }

    bool wait_posts(std::size_t n) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, 10s, [&] { return posts.size() >= n; });
    }
    void release() {
        std::lock_guard lock(mutex_);
        hold = false;
        changed_.notify_all();
    }
    std::size_t post_count() {
        std::lock_guard lock(mutex_);
        return posts.size();
    }

    struct Post {
        std::string body;
        SteadyClock::time_point at;
    };
    int webhook_failures = 0;
    bool hold = false;
    std::vector<Post> posts;
    std::vector<std::string> webhook_urls;
    std::vector<std::string> mails;
    std::chrono::milliseconds last_timeout{0};

  private:
    std::mutex mutex_;
    std::condition_variable changed_;
};

// The sender's log lines, waited for by content.
class Logs {
  public:
    AlertSender::Log callback() {
        return [this](LogLevel level, std::string_view line) {
            std::lock_guard lock(mutex_);
            lines_.push_back({level, std::string(line)});
            changed_.notify_all();
        };
    }
    bool wait_for(std::string_view part, std::chrono::milliseconds timeout = 10s) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, timeout, [&] { return find_locked(part).has_value(); });
    }
    std::optional<LogLevel> level_of(std::string_view part) {
        std::lock_guard lock(mutex_);
        return find_locked(part);
    }
    std::size_t count(std::string_view part) {
        std::lock_guard lock(mutex_);
        return std::count_if(lines_.begin(), lines_.end(), [&](const auto& l) {
            return l.second.find(part) != std::string::npos;
        });
    }
    std::string all() {
        std::lock_guard lock(mutex_);
        std::string out;
        for (const auto& [level, line] : lines_) out += line + "\n";
        return out;
    }

  private:
    std::optional<LogLevel> find_locked(std::string_view part) const {
        for (const auto& [level, line] : lines_)
            if (line.find(part) != std::string::npos) return level;
        return std::nullopt;
    }
    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<std::pair<LogLevel, std::string>> lines_;
};

AlertTargets webhook_only() {
    AlertTargets t;
    t.webhook = "https://hooks.example/x";
    return t;
}

Alert failed_alert(std::string job = "nightly") {
    Alert a;
    a.event = "task_failed";
    a.time = 1796083200;  // 2026-12-01T00:00:00Z, a Tuesday
    a.job = std::move(job);
    a.vm = "web1";
    a.task = 42;
    a.state = "failed";
    a.message = "vm 'web1': agent freeze: timed out";
    return a;
}

TEST(AlertSender, DeliveredOnceOnSuccess) {
    FakeTransport transport;
    Logs logs;
    {
        AlertSender sender(
            webhook_only(), "host1", transport, logs.callback(),
            {.first_retry = 5ms, .max_attempts = 6, .max_queued = 10, .timeout = 1234ms});
        sender.send(failed_alert());
        ASSERT_TRUE(logs.wait_for("webhook delivered")) << logs.all();
    }
    ASSERT_EQ(transport.posts.size(), 1u);
    EXPECT_EQ(transport.webhook_urls[0], "https://hooks.example/x");
    EXPECT_EQ(transport.last_timeout, 1234ms);
    EXPECT_EQ(logs.level_of("webhook delivered"), LogLevel::info);
    auto body = nlohmann::json::parse(transport.posts[0].body);
    EXPECT_EQ(body["event"], "task_failed");
    EXPECT_EQ(body["job"], "nightly");
    EXPECT_EQ(body["host"], "host1");
    EXPECT_TRUE(transport.mails.empty());
}

TEST(AlertSender, RetriedWithDoublingDelaysUntilSuccess) {
    FakeTransport transport;
    transport.webhook_failures = 3;
    Logs logs;
    AlertSender sender(webhook_only(), "host1", transport, logs.callback(),
                       {.first_retry = 30ms, .max_attempts = 6});
    sender.send(failed_alert());
    ASSERT_TRUE(logs.wait_for("webhook delivered (attempt 4)")) << logs.all();
    ASSERT_EQ(transport.post_count(), 4u);
    auto expected = 30ms;
    for (std::size_t i = 1; i < 4; ++i, expected *= 2) {
        auto gap = transport.posts[i].at - transport.posts[i - 1].at;
        EXPECT_GE(gap, expected) << "retry " << i;
        EXPECT_LT(gap, expected + 2s) << "retry " << i;
    }
    EXPECT_EQ(logs.count("failed: webhook answered 503"), 3u) << logs.all();
    EXPECT_TRUE(logs.level_of("attempt 1 of 6 failed") == LogLevel::warning);
}

TEST(AlertSender, GivesUpAfterMaxAttemptsAndLogsIt) {
    FakeTransport transport;
    transport.webhook_failures = -1;
    Logs logs;
    AlertSender sender(webhook_only(), "host1", transport, logs.callback(),
                       {.first_retry = 2ms, .max_attempts = 3});
    sender.send(failed_alert());
    ASSERT_TRUE(logs.wait_for("gave up after 3 attempts")) << logs.all();
    EXPECT_EQ(logs.level_of("gave up after 3 attempts"), LogLevel::error);
    EXPECT_EQ(transport.post_count(), 3u);
    EXPECT_EQ(logs.count("webhook delivered"), 0u);
}

TEST(AlertSender, DestructorDuringBackoffReturnsAtOnce) {
    FakeTransport transport;
    transport.webhook_failures = -1;
    Logs logs;
    auto sender = std::make_unique<AlertSender>(webhook_only(), "host1", transport, logs.callback(),
                                                AlertOptions{.first_retry = 60s});
    sender->send(failed_alert("first"));
    ASSERT_TRUE(logs.wait_for("retrying in 60 s")) << logs.all();
    sender->send(failed_alert("pending"));
    auto start = SteadyClock::now();
    sender.reset();
    EXPECT_LT(SteadyClock::now() - start, 2s);
    EXPECT_EQ(transport.post_count(), 1u);
    EXPECT_TRUE(logs.level_of("job first") == LogLevel::warning);
    EXPECT_EQ(logs.count("not delivered: the daemon is stopping"), 1u) << logs.all();
    EXPECT_EQ(logs.count("job pending, vm web1, task 42): dropped"), 1u) << logs.all();
}

TEST(AlertSender, FullQueueDropsTheOldestAndLogsIt) {
    FakeTransport transport;
    transport.hold = true;
    Logs logs;
    AlertSender sender(webhook_only(), "host1", transport, logs.callback(),
                       {.first_retry = 1ms, .max_attempts = 1, .max_queued = 2});
    sender.send(failed_alert("a"));
    ASSERT_TRUE(transport.wait_posts(1));  // "a" is being delivered, the queue is empty
    sender.send(failed_alert("b"));
    sender.send(failed_alert("c"));
    sender.send(failed_alert("d"));  // the queue holds 2: "b" goes
    EXPECT_TRUE(logs.level_of("(job b, vm web1, task 42): dropped") == LogLevel::warning)
        << logs.all();
    transport.release();
    ASSERT_TRUE(logs.wait_for("(job d, vm web1, task 42): webhook delivered")) << logs.all();
    std::vector<std::string> jobs;
    for (const auto& post : transport.posts)
        jobs.push_back(nlohmann::json::parse(post.body)["job"]);
    EXPECT_EQ(jobs, (std::vector<std::string>{"a", "c", "d"}));
}

TEST(AlertSender, EmailAndWebhookBothDelivered) {
    FakeTransport transport;
    Logs logs;
    AlertTargets targets = webhook_only();
    targets.email = "ops@example.com";
    AlertSender sender(targets, "host1", transport, logs.callback(), {.first_retry = 1ms});
    sender.send(failed_alert());
    ASSERT_TRUE(logs.wait_for("email to ops@example.com delivered")) << logs.all();
    EXPECT_EQ(transport.post_count(), 1u);
    ASSERT_EQ(transport.mails.size(), 1u);
    EXPECT_EQ(transport.mails[0], alert_mail_message(failed_alert(), "host1", "ops@example.com"));
}

TEST(AlertSender, NewTargetsApplyToLaterAlerts) {
    FakeTransport transport;
    Logs logs;
    AlertSender sender(AlertTargets{}, "host1", transport, logs.callback(), {.first_retry = 1ms});
    sender.send(failed_alert("before"));
    ASSERT_TRUE(logs.wait_for("no alert target configured")) << logs.all();
    sender.set_targets(webhook_only());
    sender.send(failed_alert("after"));
    ASSERT_TRUE(logs.wait_for("(job after, vm web1, task 42): webhook delivered")) << logs.all();
    EXPECT_EQ(transport.post_count(), 1u);
}

TEST(AlertSender, InvalidUtf8InMessageIsStillDelivered) {
    FakeTransport transport;
    Logs logs;
    AlertSender sender(webhook_only(), "host1", transport, logs.callback(), {.first_retry = 1ms});
    Alert alert = failed_alert();
    alert.message = "bad \xff\xfe bytes";
    sender.send(alert);
    ASSERT_TRUE(logs.wait_for("webhook delivered")) << logs.all();
    auto body = nlohmann::json::parse(transport.posts[0].body);
    EXPECT_TRUE(body["message"].get<std::string>().starts_with("bad ")) << body;
}

TEST(AlertBody, HasTheDocumentedFields) {
    auto body = alert_body(failed_alert(), "host1");
    EXPECT_EQ(body, nlohmann::json::parse(R"({"event": "task_failed", "time": 1796083200,
        "host": "host1", "job": "nightly", "vm": "web1", "task": 42, "state": "failed",
        "message": "vm 'web1': agent freeze: timed out"})"));
    Alert watch;
    watch.event = "no_recent_backup";
    watch.job = "nightly";
    watch.vm = "db1";
    auto no_task = alert_body(watch, "h");
    ASSERT_TRUE(no_task.contains("task"));
    EXPECT_TRUE(no_task["task"].is_null());
}

std::pair<std::vector<std::string>, std::string> split_mail(const std::string& message) {
    auto blank = message.find("\n\n");
    EXPECT_NE(blank, std::string::npos);
    std::vector<std::string> headers;
    std::istringstream in(message.substr(0, blank));
    for (std::string line; std::getline(in, line);) headers.push_back(line);
    return {headers, message.substr(blank + 2)};
}

TEST(AlertMail, HasHeadersAndBody) {
    auto [headers, body] =
        split_mail(alert_mail_message(failed_alert(), "host1", "ops@example.com"));
    EXPECT_EQ(headers, (std::vector<std::string>{
                           "To: ops@example.com",
                           "Subject: vmshadow: host1: job nightly failed (VM web1)",
                           "Date: Tue, 01 Dec 2026 00:00:00 +0000",
                           "MIME-Version: 1.0",
                           "Content-Type: text/plain; charset=UTF-8",
                           "Content-Transfer-Encoding: 8bit",
                           "Auto-Submitted: auto-generated",
                       }));
    EXPECT_TRUE(body.starts_with("vm 'web1': agent freeze: timed out\n")) << body;
    EXPECT_NE(body.find("Task: 42\n"), std::string::npos) << body;
    EXPECT_NE(body.find("Time: 2026-12-01T00:00:00Z\n"), std::string::npos) << body;
}

TEST(AlertMail, CrLfInAnyFieldCannotAddAHeader) {
    Alert alert = failed_alert("job\r\nBcc: victim@example.com");
    alert.vm = "vm\nX-Injected: 1";
    alert.state = "s\rTo: other@example.com";
    auto [headers, body] = split_mail(
        alert_mail_message(alert, "host\r\nCc: a@b", "ops@example.com\r\nBcc: evil@example.com"));
    EXPECT_EQ(headers.size(), 7u);
    for (const auto& h : headers) {
        EXPECT_EQ(h.find('\r'), std::string::npos) << h;
        EXPECT_FALSE(h.starts_with("Bcc") || h.starts_with("Cc") || h.starts_with("X-Injected"))
            << h;
    }
    EXPECT_EQ(headers[0], "To: ops@example.com  Bcc: evil@example.com");
    EXPECT_EQ(body.find('\r'), std::string::npos);
    EXPECT_NE(body.find("Job: job  Bcc: victim@example.com\n"), std::string::npos) << body;
}

TEST(AlertMail, NonAsciiSubjectIsEncoded) {
    Alert alert = failed_alert("nightly");
    alert.vm = "wéb";
    auto [headers, body] = split_mail(alert_mail_message(alert, "host1", "ops@example.com"));
    EXPECT_TRUE(headers[1].starts_with("Subject: =?UTF-8?B?")) << headers[1];
    EXPECT_TRUE(headers[1].ends_with("?=")) << headers[1];
    EXPECT_NE(body.find("VM: wéb\n"), std::string::npos);
}

TEST(AlertMail, SubjectSaysWhatHappened) {
    Alert watch;
    watch.event = "no_recent_backup";
    watch.job = "nightly";
    watch.vm = "db1";
    auto [headers, body] = split_mail(alert_mail_message(watch, "h", "o@e"));
    EXPECT_EQ(headers[1],
              "Subject: vmshadow: h: no recent successful backup of VM db1 (job nightly)");
    Alert ended = failed_alert();
    ended.event = "task_ended";
    ended.state = "ok";
    ended.vm = "";
    auto [h2, b2] = split_mail(alert_mail_message(ended, "h", "o@e"));
    EXPECT_EQ(h2[1], "Subject: vmshadow: h: job nightly ended ok");
}

}  // namespace
}  // namespace vmshadow::daemon

namespace vmshadow::daemon {
namespace {

// A directory of fake sendmail scripts, also TMPDIR while it lives (to see the message file
// go away); removed with everything in it.
class SendmailDir {
  public:
    SendmailDir() {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "vmshadow-sendmail-XXXXXX").string();
        dir_ = ::mkdtemp(tmpl.data());
        std::filesystem::create_directory(dir_ / "tmp");
        if (const char* old = ::getenv("TMPDIR")) old_tmpdir_ = old;
        ::setenv("TMPDIR", (dir_ / "tmp").c_str(), 1);
    }
    ~SendmailDir() {
        if (old_tmpdir_)
            ::setenv("TMPDIR", old_tmpdir_->c_str(), 1);
        else
            ::unsetenv("TMPDIR");
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    std::filesystem::path script(const std::string& name, const std::string& body) {
        auto path = dir_ / name;
        std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
        std::filesystem::permissions(path, std::filesystem::perms::owner_all);
        return path;
    }
    std::string read(const std::string& name) {
        std::ifstream in(dir_ / name);
        return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    }
    bool tmp_is_empty() const { return std::filesystem::is_empty(dir_ / "tmp"); }
    const std::filesystem::path& dir() const { return dir_; }

  private:
    std::filesystem::path dir_;
    std::optional<std::string> old_tmpdir_;
};

TEST(Sendmail, MessageGoesToStdinWithDashTAndOi) {
    SendmailDir d;
    auto sendmail = d.script("sendmail",
                             "echo \"$@\" > \"$(dirname \"$0\")/args\"\n"
                             "cat > \"$(dirname \"$0\")/stdin\"");
    std::string message = alert_mail_message(failed_alert(), "host1", "ops@example.com");
    ASSERT_TRUE(sendmail_message(sendmail, message, 10s));
    EXPECT_EQ(d.read("args"), "-t -oi\n");
    EXPECT_EQ(d.read("stdin"), message);
    EXPECT_TRUE(d.tmp_is_empty());
}

TEST(Sendmail, PathIsNeverParsedAsShell) {
    SendmailDir d;
    auto sendmail = d.script("send mail $(touch pwned);x", "cat > \"$(dirname \"$0\")/stdin\"");
    ASSERT_TRUE(sendmail_message(sendmail, "To: a@b\n\nhi\n", 10s));
    EXPECT_EQ(d.read("stdin"), "To: a@b\n\nhi\n");
    EXPECT_FALSE(std::filesystem::exists(d.dir() / "pwned"));
    EXPECT_FALSE(std::filesystem::exists("pwned"));
}

TEST(Sendmail, FailureCarriesExitCodeAndStderr) {
    SendmailDir d;
    auto sendmail = d.script("sendmail", "cat >/dev/null; echo 'mail queue is full' >&2; exit 75");
    auto sent = sendmail_message(sendmail, "To: a@b\n\nhi\n", 10s);
    ASSERT_FALSE(sent);
    EXPECT_EQ(sent.error().kind(), ErrorKind::unavailable);
    EXPECT_NE(sent.error().message().find("exited with 75: mail queue is full"), std::string::npos)
        << sent.error().message();
    EXPECT_TRUE(d.tmp_is_empty());
}

TEST(Sendmail, MissingProgramIsUnavailable) {
    SendmailDir d;
    auto sent = sendmail_message(d.dir() / "no-sendmail", "To: a@b\n\nhi\n", 10s);
    ASSERT_FALSE(sent);
    EXPECT_EQ(sent.error().kind(), ErrorKind::unavailable);
    EXPECT_NE(sent.error().message().find("could not be run"), std::string::npos)
        << sent.error().message();
}

TEST(Sendmail, HungSendmailIsKilledAtTheDeadline) {
    SendmailDir d;
    auto sendmail = d.script("sendmail", "sleep 30");
    auto start = SteadyClock::now();
    auto sent = sendmail_message(sendmail, "To: a@b\n\nhi\n", 300ms);
    EXPECT_LT(SteadyClock::now() - start, 10s);
    ASSERT_FALSE(sent);
    EXPECT_EQ(sent.error().kind(), ErrorKind::timeout) << sent.error().message();
    EXPECT_TRUE(d.tmp_is_empty());
}

}  // namespace
}  // namespace vmshadow::daemon
