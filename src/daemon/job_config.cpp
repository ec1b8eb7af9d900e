// SPDX-License-Identifier: MIT
#include "daemon/job_config.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <toml.hpp>

#include "common/enum_names.h"
#include "common/hex.h"
#include "daemon/calendar.h"
#include "repo/gc.h"

namespace vmshadow::daemon {
namespace {

using json = nlohmann::json;

constexpr auto kJobKinds = enum_names<JobKind>({{JobKind::backup, "backup"},
                                                {JobKind::verify, "verify"},
                                                {JobKind::prune, "prune"},
                                                {JobKind::check, "check"}});
constexpr auto kCatchUps =
    enum_names<CatchUp>({{CatchUp::one, "one"}, {CatchUp::all, "all"}, {CatchUp::none, "none"}});
constexpr auto kNotifies = enum_names<Notify>(
    {{Notify::always, "always"}, {Notify::failure, "failure"}, {Notify::never, "never"}});
// JobSpec keeps the method as text (the engine's name for it); the table says which exist.
enum class Method { automatic, application, image, crash };
constexpr auto kMethods = enum_names<Method>({{Method::automatic, "auto"},
                                              {Method::application, "application"},
                                              {Method::image, "image"},
                                              {Method::crash, "crash"}});

template <typename Table>
std::string names_of(const Table& table) {
    std::string out;
    for (const auto& [value, name] : table.entries()) {
        if (!out.empty()) out += ", ";
        out += name;
    }
    return out;
}

struct Range {
    std::int64_t lo, hi;
};
constexpr Range kConcurrency{1, 64};
constexpr Range kMaxRps{0, 1000000};
constexpr Range kMaxBandwidthMib{0, 1048576};
constexpr Range kRetryLockSeconds{0, 86400};
constexpr Range kKeep{1, repo::kMaxKeep};  // vmshadow prune's bound
constexpr Range kPercent{0, 100};
constexpr Range kAlertHours{0, 87600};
constexpr Range kKeepTasks{1, 1000000};
constexpr Range kKeepTaskDays{1, 36500};

// A config error. The readers below nest deeply and every error ends the parse, so they
// throw this and the public functions return it as invalid_argument; it never leaves here.
struct Invalid {
    std::string message;
};

// Names a value as errors show it: "vmshadowd.toml:14: job.nightly.schedule" (from a file),
// "job.nightly.schedule" (a config in memory), "job.schedule" (the API's JSON job).
using Where = std::function<std::string(std::string_view section, std::string_view key)>;

std::string dotted(std::string_view section, std::string_view key) {
    if (section.empty()) return std::string(key);
    if (key.empty()) return std::string(section);
    return std::string(section) + "." + std::string(key);
}

// Reads and checks values of one source (the TOML file as JSON, or the API's JSON): keys are
// kebab-case in TOML ("keep-daily") and snake_case in JSON ("keep_daily").
class Reader {
  public:
    Reader(Where where, bool api) : where_(std::move(where)), api_(api) {}

    std::string spell(std::string_view key) const {
        std::string s(key);
        if (api_) std::replace(s.begin(), s.end(), '-', '_');
        return s;
    }
    [[noreturn]] void fail(std::string_view section, std::string_view key,
                           std::string_view what) const {
        throw Invalid{where_(section, key.empty() ? "" : spell(key)) + ": " + std::string(what)};
    }

    std::string describe(const json& v) const {
        switch (v.type()) {
            case json::value_t::boolean:
                return "a boolean";
            case json::value_t::number_integer:
            case json::value_t::number_unsigned:
                return "an integer";
            case json::value_t::number_float: {
                double d = v.get<double>();
                if (std::isnan(d)) return "a float (nan)";
                if (std::isinf(d)) return "a float (inf)";
                return "a float";
            }
            case json::value_t::string:
                return "a string";
            case json::value_t::array:
                return "an array";
            case json::value_t::object:
                return api_ ? "an object" : "a table";
            case json::value_t::null:
                return "null";
            default:
                return "a value of another type";
        }
    }
    [[noreturn]] void wrong_type(std::string_view section, std::string_view key,
                                 std::string_view expected, const json& got) const {
        fail(section, key, "expected " + std::string(expected) + ", got " + describe(got));
    }

    const json* find(const json& obj, std::string_view key) const {
        auto it = obj.find(spell(key));
        return it == obj.end() ? nullptr : &*it;
    }

    // Rejects keys not in `known` (a typo must not be ignored), naming the closest known key.
    void only_keys(const json& obj, std::string_view section,
                   const std::vector<std::string_view>& known) const {
        for (const auto& [key, value] : obj.items()) {
            bool found = std::any_of(known.begin(), known.end(),
                                     [&](std::string_view k) { return spell(k) == key; });
            if (found) continue;
            std::string what = "unknown key";
            if (auto near = closest(key, known)) what += " (did you mean " + spell(*near) + "?)";
            throw Invalid{where_(section, key) + ": " + what};
        }
    }

    const json* table(const json& obj, std::string_view section, std::string_view key) const {
        const json* v = find(obj, key);
        if (v && !v->is_object()) wrong_type(section, key, api_ ? "an object" : "a table", *v);
        return v;
    }
    std::optional<std::string> string(const json& obj, std::string_view section,
                                      std::string_view key) const {
        const json* v = find(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_string()) wrong_type(section, key, "a string", *v);
        return v->get<std::string>();
    }
    std::optional<bool> boolean(const json& obj, std::string_view section,
                                std::string_view key) const {
        const json* v = find(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_boolean()) wrong_type(section, key, "true or false", *v);
        return v->get<bool>();
    }
    std::optional<unsigned> integer(const json& obj, std::string_view section, std::string_view key,
                                    Range range) const {
        const json* v = find(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_number_integer()) wrong_type(section, key, "an integer", *v);
        // A JSON integer above int64 arrives unsigned; TOML's saturate at the int64 limits.
        bool in_range;
        if (v->is_number_unsigned()) {
            auto u = v->get<std::uint64_t>();
            in_range = u >= static_cast<std::uint64_t>(range.lo) &&
                       u <= static_cast<std::uint64_t>(range.hi);
        } else {
            auto i = v->get<std::int64_t>();
            in_range = i >= range.lo && i <= range.hi;
        }
        if (!in_range) {
            // toml11 saturates what does not fit in 64 bits: say so rather than echo it.
            bool huge = v->is_number_unsigned() ||
                        v->get<std::int64_t>() == std::numeric_limits<std::int64_t>::max();
            bool tiny = !huge && v->get<std::int64_t>() == std::numeric_limits<std::int64_t>::min();
            fail(section, key,
                 huge   ? "too large: the range is " + range_text(range)
                 : tiny ? "too small: the range is " + range_text(range)
                        : out_of_range(v->dump(), range));
        }
        return static_cast<unsigned>(v->get<std::int64_t>());
    }
    std::optional<std::vector<std::string>> strings(const json& obj, std::string_view section,
                                                    std::string_view key) const {
        const json* v = find(obj, key);
        if (!v) return std::nullopt;
        if (!v->is_array()) wrong_type(section, key, "an array of strings", *v);
        std::vector<std::string> out;
        for (const auto& item : *v) {
            if (!item.is_string()) wrong_type(section, key, "an array of strings", item);
            out.push_back(item.get<std::string>());
        }
        return out;
    }

    static std::string range_text(Range range) {
        return std::to_string(range.lo) + ".." + std::to_string(range.hi);
    }
    static std::string out_of_range(std::string_view value, Range range) {
        return std::string(value) + " is out of range " + range_text(range);
    }

  private:
    static std::size_t distance(std::string_view a, std::string_view b) {
        std::vector<std::size_t> row(b.size() + 1);
        for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
        for (std::size_t i = 1; i <= a.size(); ++i) {
            std::size_t diagonal = row[0];
            row[0] = i;
            for (std::size_t j = 1; j <= b.size(); ++j) {
                std::size_t up = row[j];
                row[j] = std::min(
                    {row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
                diagonal = up;
            }
        }
        return row[b.size()];
    }
    std::optional<std::string_view> closest(std::string_view key,
                                            const std::vector<std::string_view>& known) const {
        std::optional<std::string_view> best;
        std::size_t best_distance = 3;  // further than 2 edits is not a typo of it
        for (std::string_view k : known) {
            std::size_t d = distance(key, spell(k));
            if (d < best_distance) best = k, best_distance = d;
        }
        return best;
    }

    Where where_;
    bool api_;
};

// ---- names and strings ---------------------------------------------------------------

bool valid_name(std::string_view name) {
    auto lower_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (name.empty() || name.size() > 63 || !lower_digit(name[0])) return false;
    return std::all_of(name.begin(), name.end(),
                       [&](char c) { return lower_digit(c) || c == '_' || c == '-'; });
}

void check_name(const Reader& r, std::string_view section, std::string_view key,
                std::string_view what, std::string_view name) {
    if (!valid_name(name))
        r.fail(section, key,
               "invalid " + std::string(what) + " name \"" + std::string(name) +
                   "\" (use 1 to 63 of a-z, 0-9, '_' and '-', starting with a letter or digit)");
}

bool has_control(std::string_view s) {
    return std::any_of(s.begin(), s.end(),
                       [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

bool valid_utf8(std::string_view s) {
    try {
        (void)json(s).dump();  // nlohmann refuses (throws on) invalid UTF-8
        return true;
    } catch (const json::type_error&) {
        return false;
    }
}

// Text that ends up in logs, mail headers and the API's JSON: one line of valid UTF-8.
void check_text(const Reader& r, std::string_view section, std::string_view key,
                std::string_view s) {
    if (has_control(s)) r.fail(section, key, "contains a control character");
    if (!valid_utf8(s)) r.fail(section, key, "is not valid UTF-8");
}

// An error message echoes the user's text: made one line of valid UTF-8 before it is shown
// (the API sends it as JSON, which cannot hold invalid UTF-8).
std::string printable(std::string message) {
    for (char& c : message)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    if (valid_utf8(message)) return message;
    auto quoted = json(message).dump(-1, ' ', false, json::error_handler_t::replace);
    return json::parse(quoted).get<std::string>();
}

void check_absolute(const Reader& r, std::string_view section, std::string_view key,
                    const std::filesystem::path& p, bool may_be_empty) {
    check_text(r, section, key, p.native());
    if (p.empty() && may_be_empty) return;
    if (!p.is_absolute()) r.fail(section, key, "\"" + p.string() + "\" is not an absolute path");
}

void check_range(const Reader& r, std::string_view section, std::string_view key,
                 std::int64_t value, Range range) {
    if (value < range.lo || value > range.hi)
        r.fail(section, key, Reader::out_of_range(std::to_string(value), range));
}

// ---- jobs ------------------------------------------------------------------------------

constexpr std::string_view kKeepKeys[] = {"keep-last",   "keep-hourly",  "keep-daily",
                                          "keep-weekly", "keep-monthly", "keep-yearly"};

std::array<std::optional<unsigned>*, 6> keeps(Retention& r) {
    return {&r.keep_last,   &r.keep_hourly,  &r.keep_daily,
            &r.keep_weekly, &r.keep_monthly, &r.keep_yearly};
}
std::array<const std::optional<unsigned>*, 6> keeps(const Retention& r) {
    return {&r.keep_last,   &r.keep_hourly,  &r.keep_daily,
            &r.keep_weekly, &r.keep_monthly, &r.keep_yearly};
}

// Which kinds take a key (the keys every kind takes are not listed).
std::optional<std::string_view> only_for(std::string_view key) {
    if (key == "vms") return "backup and verify";
    if (key == "method" || key == "group" || key == "alert-after-hours") return "backup";
    if (key.starts_with("keep-")) return "backup and prune";
    if (key == "gc") return "prune";
    if (key == "boot") return "verify";
    if (key == "read-data-percent") return "check";
    return std::nullopt;
}
bool kind_takes(JobKind kind, std::string_view key) {
    auto kinds = only_for(key);
    return !kinds || kinds->find(job_kind_name(kind)) != std::string_view::npos;
}

[[noreturn]] void not_for_kind(const Reader& r, std::string_view section, std::string_view key,
                               JobKind kind) {
    r.fail(section, key,
           "not a setting of a " + std::string(job_kind_name(kind)) + " job (only of " +
               std::string(*only_for(key)) + " jobs)");
}

template <typename Table>
auto parse_enum(const Reader& r, std::string_view section, std::string_view key, const Table& table,
                const std::string& text) {
    auto value = table.parse(text);
    if (!value) r.fail(section, key, "\"" + text + "\" is not one of " + names_of(table));
    return *value;
}

// Types, keys and enums of one job's table (TOML) or object (JSON).
JobSpec read_job(const json& t, std::string id, const Reader& r, std::string_view section,
                 bool with_id) {
    JobSpec job;
    job.id = std::move(id);
    if (auto kind = r.string(t, section, "kind"))
        job.kind = parse_enum(r, section, "kind", kJobKinds, *kind);
    std::vector<std::string_view> keys = {
        "kind",       "schedule",    "repository",        "vms",
        "method",     "group",       "keep-last",         "keep-hourly",
        "keep-daily", "keep-weekly", "keep-monthly",      "keep-yearly",
        "gc",         "boot",        "read-data-percent", "catch-up",
        "after",      "notify",      "alert-after-hours", "enabled"};
    if (with_id) keys.push_back("id");
    r.only_keys(t, section, keys);
    for (std::string_view key : keys)
        if (r.find(t, key) && !kind_takes(job.kind, key)) not_for_kind(r, section, key, job.kind);

    if (auto v = r.string(t, section, "schedule")) job.schedule = *v;
    if (auto v = r.string(t, section, "repository")) job.repository = *v;
    if (auto v = r.strings(t, section, "vms")) job.vms = *v;
    if (auto v = r.string(t, section, "method")) {
        parse_enum(r, section, "method", kMethods, *v);
        job.method = *v;
    }
    if (auto v = r.boolean(t, section, "group")) job.group = *v;
    auto slots = keeps(job.retention);
    for (std::size_t i = 0; i < slots.size(); ++i)
        *slots[i] = r.integer(t, section, kKeepKeys[i], kKeep);
    if (auto v = r.boolean(t, section, "gc")) job.gc = *v;
    if (auto v = r.boolean(t, section, "boot")) job.boot = *v;
    if (auto v = r.integer(t, section, "read-data-percent", kPercent)) job.read_data_percent = *v;
    if (auto v = r.string(t, section, "catch-up"))
        job.catch_up = parse_enum(r, section, "catch-up", kCatchUps, *v);
    if (auto v = r.string(t, section, "after")) job.after = *v;
    if (auto v = r.string(t, section, "notify"))
        job.notify = parse_enum(r, section, "notify", kNotifies, *v);
    if (auto v = r.integer(t, section, "alert-after-hours", kAlertHours))
        job.alert_after_hours = *v;
    if (auto v = r.boolean(t, section, "enabled")) job.enabled = *v;
    return job;
}

// A key the job's kind does not take must hold its default (a JobSpec built in memory).
void check_inapplicable(const JobSpec& job, const Reader& r, std::string_view section) {
    const JobSpec d;
    auto refuse = [&](std::string_view key, bool differs) {
        if (differs && !kind_takes(job.kind, key)) not_for_kind(r, section, key, job.kind);
    };
    refuse("vms", !job.vms.empty());
    refuse("method", job.method != d.method);
    refuse("group", job.group != d.group);
    refuse("alert-after-hours", job.alert_after_hours != d.alert_after_hours);
    auto slots = keeps(job.retention);
    for (std::size_t i = 0; i < slots.size(); ++i) refuse(kKeepKeys[i], slots[i]->has_value());
    refuse("gc", job.gc != d.gc);
    refuse("boot", job.boot != d.boot);
    refuse("read-data-percent", job.read_data_percent != d.read_data_percent);
}

// The checks of one job on its own (the whole config's are in check_config).
void check_job(const JobSpec& job, const Reader& r, std::string_view section) {
    check_name(r, section, section.empty() ? "id" : "", "job", job.id);
    if (!kJobKinds.parse(job_kind_name(job.kind)))
        r.fail(section, "kind", "not one of " + names_of(kJobKinds));
    check_inapplicable(job, r, section);
    check_text(r, section, "schedule", job.schedule);
    if (!job.schedule.empty()) {
        auto event = CalendarEvent::parse(job.schedule);
        if (!event) r.fail(section, "schedule", event.error().message());
    }
    if (job.repository.empty()) r.fail(section, "repository", "missing: name a [repository.NAME]");
    check_name(r, section, "repository", "repository", job.repository);
    if ((job.kind == JobKind::backup || job.kind == JobKind::verify) && job.vms.empty())
        r.fail(section, "vms", "missing: list VM names or globs (\"*\" = every VM)");
    for (const auto& vm : job.vms) {
        if (vm.empty()) r.fail(section, "vms", "an empty VM name");
        if (vm.size() > 255) r.fail(section, "vms", "a VM name longer than 255 bytes");
        check_text(r, section, "vms", vm);
    }
    if (!kMethods.parse(job.method))
        r.fail(section, "method", "\"" + job.method + "\" is not one of " + names_of(kMethods));
    auto slots = keeps(job.retention);
    for (std::size_t i = 0; i < slots.size(); ++i)
        if (*slots[i]) check_range(r, section, kKeepKeys[i], **slots[i], kKeep);
    if (job.kind == JobKind::prune && job.retention.empty())
        r.fail(section, "", "a prune job needs at least one keep-* setting");
    check_range(r, section, "read-data-percent", job.read_data_percent, kPercent);
    check_range(r, section, "alert-after-hours", job.alert_after_hours, kAlertHours);
    if (!kCatchUps.parse(catch_up_name(job.catch_up)))
        r.fail(section, "catch-up", "not one of " + names_of(kCatchUps));
    if (!kNotifies.parse(notify_name(job.notify)))
        r.fail(section, "notify", "not one of " + names_of(kNotifies));
    if (job.after) {
        check_name(r, section, "after", "job", *job.after);
        if (*job.after == job.id) r.fail(section, "after", "a job cannot run after itself");
    }
}

// ---- the whole config ----------------------------------------------------------------

void read_daemon(const json& t, const Reader& r, DaemonSettings& d) {
    const std::string_view s = "daemon";
    r.only_keys(t, s,
                {"listen", "connect-uri", "scratch-dir", "max-concurrent-backups",
                 "max-concurrent-tasks", "api-threads", "keep-tasks", "keep-task-days"});
    if (auto v = r.string(t, s, "listen")) d.listen = *v;
    if (auto v = r.string(t, s, "connect-uri")) d.connect_uri = *v;
    if (auto v = r.string(t, s, "scratch-dir")) d.scratch_dir = *v;
    if (auto v = r.integer(t, s, "max-concurrent-backups", kConcurrency))
        d.max_concurrent_backups = *v;
    if (auto v = r.integer(t, s, "max-concurrent-tasks", kConcurrency)) d.max_concurrent_tasks = *v;
    if (auto v = r.integer(t, s, "api-threads", kConcurrency)) d.api_threads = *v;
    if (auto v = r.integer(t, s, "keep-tasks", kKeepTasks)) d.keep_tasks = *v;
    if (auto v = r.integer(t, s, "keep-task-days", kKeepTaskDays)) d.keep_task_days = *v;
}

RepositorySpec read_repository(const json& t, const std::string& name, const Reader& r,
                               std::string_view section) {
    if (!t.is_object()) r.wrong_type(section, "", "a table", t);
    r.only_keys(t, section,
                {"path", "password-file", "s3-credentials", "cacert", "s3-virtual-hosted",
                 "s3-max-rps", "s3-max-bandwidth-mib", "retry-lock-seconds"});
    RepositorySpec repo;
    repo.name = name;
    if (auto v = r.string(t, section, "path")) repo.path = *v;
    if (auto v = r.string(t, section, "password-file")) repo.password_file = *v;
    if (auto v = r.string(t, section, "s3-credentials")) repo.s3_credentials = *v;
    if (auto v = r.string(t, section, "cacert")) repo.cacert = *v;
    if (auto v = r.boolean(t, section, "s3-virtual-hosted")) repo.s3_virtual_hosted = *v;
    if (auto v = r.integer(t, section, "s3-max-rps", kMaxRps)) repo.s3_max_rps = *v;
    if (auto v = r.integer(t, section, "s3-max-bandwidth-mib", kMaxBandwidthMib))
        repo.s3_max_bandwidth_mib = *v;
    if (auto v = r.integer(t, section, "retry-lock-seconds", kRetryLockSeconds))
        repo.retry_lock_seconds = *v;
    return repo;
}

void read_alerts(const json& t, const Reader& r, AlertTargets& a) {
    const std::string_view s = "alerts";
    r.only_keys(t, s, {"webhook", "webhook-sha256", "email", "sendmail"});
    if (auto v = r.string(t, s, "webhook")) a.webhook = *v;
    if (auto v = r.string(t, s, "webhook-sha256")) a.webhook_sha256 = *v;
    if (auto v = r.string(t, s, "email")) a.email = *v;
    if (auto v = r.string(t, s, "sendmail")) a.sendmail = *v;
}

void read_replica(const json& t, const Reader& r, ReplicaSettings& p) {
    const std::string_view s = "replica";
    r.only_keys(t, s, {"certificate", "key", "ca", "listen", "endpoint", "allow"});
    if (auto v = r.string(t, s, "certificate")) p.certificate = *v;
    if (auto v = r.string(t, s, "key")) p.key = *v;
    if (auto v = r.string(t, s, "ca")) p.ca = *v;
    if (auto v = r.string(t, s, "listen")) p.listen = *v;
    if (auto v = r.string(t, s, "endpoint")) p.endpoint = *v;
    const json* allow = r.find(t, "allow");
    if (!allow) return;
    if (!allow->is_array())
        r.wrong_type(s, "allow", "an array of tables ([[replica.allow]])", *allow);
    for (std::size_t i = 0; i < allow->size(); ++i) {
        const json& entry = (*allow)[i];
        std::string section = "replica.allow[" + std::to_string(i) + "]";
        if (!entry.is_object()) r.wrong_type(section, "", "a table", entry);
        r.only_keys(entry, section, {"subject", "storage"});
        ReplicaAllowSpec a;
        if (auto v = r.string(entry, section, "subject")) a.subject = *v;
        if (auto v = r.string(entry, section, "storage")) a.storage = *v;
        p.allow.push_back(std::move(a));
    }
}

DaemonConfig read_config(const json& root, const Reader& r) {
    r.only_keys(root, "", {"daemon", "repository", "alerts", "job", "replica"});
    DaemonConfig c;
    if (const json* d = r.table(root, "", "daemon")) read_daemon(*d, r, c.daemon);
    if (const json* repos = r.table(root, "", "repository"))
        for (const auto& [name, t] : repos->items())
            c.repositories[name] = read_repository(t, name, r, dotted("repository", name));
    if (const json* a = r.table(root, "", "alerts")) read_alerts(*a, r, c.alerts);
    if (const json* p = r.table(root, "", "replica")) read_replica(*p, r, c.replica.emplace());
    if (const json* jobs = r.table(root, "", "job"))
        for (const auto& [id, t] : jobs->items()) {
            std::string section = dotted("job", id);
            if (!t.is_object()) r.wrong_type(section, "", "a table", t);
            c.jobs.push_back(read_job(t, id, r, section, false));
        }
    return c;
}

void check_address(const Reader& r, std::string_view section, std::string_view key,
                   const std::string& listen) {
    check_text(r, section, key, listen);
    if (listen.empty()) return;
    auto colon = listen.rfind(':');
    bool ok = colon != std::string::npos && colon > 0 && colon + 1 < listen.size() &&
              colon + 6 >= listen.size();
    unsigned port = 0;
    for (std::size_t i = colon + 1; ok && i < listen.size(); ++i) {
        ok = listen[i] >= '0' && listen[i] <= '9';
        port = port * 10 + static_cast<unsigned>(listen[i] - '0');
    }
    // Port 0: any free port (tests; the daemon prints the one it got).
    if (!ok || port > 65535 || listen.find(' ') != std::string::npos)
        r.fail(section, key,
               "\"" + listen + "\" is not ADDRESS:PORT (e.g. \"127.0.0.1:8470\", \"[::1]:8470\")");
}

void check_listen(const Reader& r, const std::string& listen) {
    check_address(r, "daemon", "listen", listen);
}

void check_replica(const Reader& r, const ReplicaSettings& p) {
    const std::string_view s = "replica";
    if (p.certificate.empty()) r.fail(s, "certificate", "missing: this host's certificate (PEM)");
    if (p.key.empty()) r.fail(s, "key", "missing: the certificate's key (PEM)");
    if (p.ca.empty()) r.fail(s, "ca", "missing: the CA peers' certificates chain to (PEM)");
    check_absolute(r, s, "certificate", p.certificate, false);
    check_absolute(r, s, "key", p.key, false);
    check_absolute(r, s, "ca", p.ca, false);
    check_address(r, s, "listen", p.listen);
    check_address(r, s, "endpoint", p.endpoint);
    if (p.listen.empty() && !p.endpoint.empty())
        r.fail(s, "endpoint",
               "set, but no listen: peers would be sent to a listener this "
               "host does not run");
    if (p.listen.empty() && !p.allow.empty())
        r.fail(s, "allow",
               "primaries are allowed, but no listen: set replica.listen for "
               "this host to receive replicas");
    std::set<std::string> subjects;
    for (std::size_t i = 0; i < p.allow.size(); ++i) {
        const auto& a = p.allow[i];
        std::string section = "replica.allow[" + std::to_string(i) + "]";
        if (a.subject.empty())
            r.fail(section, "subject", "missing: the primary's certificate subject (\"CN=hosta\")");
        check_text(r, section, "subject", a.subject);
        if (a.subject.find('=') == std::string::npos)
            r.fail(section, "subject",
                   "\"" + a.subject + "\" is not a certificate subject (e.g. \"CN=hosta\")");
        if (!subjects.insert(a.subject).second)
            r.fail(section, "subject", "\"" + a.subject + "\" is allowed twice");
        if (a.storage.empty()) r.fail(section, "storage", "missing: where its replicas are stored");
        check_absolute(r, section, "storage", a.storage, false);
    }
}

void check_alerts(const Reader& r, const AlertTargets& a) {
    const std::string_view s = "alerts";
    check_text(r, s, "webhook", a.webhook);
    if (!a.webhook.empty() && !a.webhook.starts_with("http://") &&
        !a.webhook.starts_with("https://"))
        r.fail(s, "webhook", "\"" + a.webhook + "\" is not an http:// or https:// URL");
    if (a.webhook.find(' ') != std::string::npos) r.fail(s, "webhook", "contains a space");
    if (a.webhook_sha256) {
        std::string hex;
        for (char c : *a.webhook_sha256)
            if (c != ':') hex += c;
        if (hex.size() != 64 || !std::all_of(hex.begin(), hex.end(), [](char c) {
                return std::isxdigit(static_cast<unsigned char>(c));
            }))
            r.fail(s, "webhook-sha256", "not a SHA-256 fingerprint (64 hex digits, ':' allowed)");
    }
    check_text(r, s, "email", a.email);
    auto at = a.email.find('@');
    if (!a.email.empty() && (at == std::string::npos || at == 0 || at + 1 == a.email.size() ||
                             a.email.find_first_of(" ,;<>\"") != std::string::npos))
        r.fail(s, "email", "\"" + a.email + "\" is not one address (user@domain)");
    check_absolute(r, s, "sendmail", a.sendmail, false);
}

// Every cross-reference: repositories named by jobs exist, `after` names a job, no cycle.
void check_references(const DaemonConfig& c, const Reader& r) {
    std::set<std::string> ids;
    for (const auto& job : c.jobs) {
        std::string section = dotted("job", job.id);
        if (!ids.insert(job.id).second) r.fail(section, "", "a second job with this id");
        if (!c.repositories.contains(job.repository))
            r.fail(section, "repository",
                   "no repository \"" + job.repository + "\" (add a [repository." + job.repository +
                       "] table)");
    }
    for (const auto& job : c.jobs) {
        if (!job.after) continue;
        std::string section = dotted("job", job.id);
        if (!ids.contains(*job.after)) r.fail(section, "after", "no job \"" + *job.after + "\"");
        std::string chain = job.id;
        const JobSpec* at = &job;
        for (std::size_t steps = 0; at && at->after && steps <= c.jobs.size(); ++steps) {
            chain += " -> " + *at->after;
            if (*at->after == job.id) r.fail(section, "after", "a cycle: " + chain);
            at = c.job(*at->after);
        }
    }
}

void check_config(const DaemonConfig& c, const Reader& r) {
    const auto& d = c.daemon;
    check_listen(r, d.listen);
    check_text(r, "daemon", "connect-uri", d.connect_uri);
    check_absolute(r, "daemon", "scratch-dir", d.scratch_dir, false);
    check_range(r, "daemon", "max-concurrent-backups", d.max_concurrent_backups, kConcurrency);
    check_range(r, "daemon", "max-concurrent-tasks", d.max_concurrent_tasks, kConcurrency);
    check_range(r, "daemon", "api-threads", d.api_threads, kConcurrency);
    check_range(r, "daemon", "keep-tasks", d.keep_tasks, kKeepTasks);
    check_range(r, "daemon", "keep-task-days", d.keep_task_days, kKeepTaskDays);
    for (const auto& [name, repo] : c.repositories) {
        std::string section = dotted("repository", name);
        check_name(r, section, "", "repository", name);
        if (repo.name != name) r.fail(section, "", "the name differs from its key");
        if (repo.path.empty())
            r.fail(section, "path", "missing: the repository's directory or s3: location");
        if (!repo.path.native().starts_with("s3:"))
            check_absolute(r, section, "path", repo.path, false);
        else
            check_text(r, section, "path", repo.path.native());
        check_absolute(r, section, "password-file", repo.password_file, true);
        check_absolute(r, section, "s3-credentials", repo.s3_credentials, true);
        check_absolute(r, section, "cacert", repo.cacert, true);
    }
    check_alerts(r, c.alerts);
    if (c.replica) check_replica(r, *c.replica);
    for (const auto& job : c.jobs) check_job(job, r, dotted("job", job.id));
    check_references(c, r);
}

// ---- TOML ------------------------------------------------------------------------------

// The TOML document as JSON, so that the file and the API share one reader; a date-time
// (which no setting takes) is refused here, where its line is known.
json to_json(const toml::value& v, const std::string& file, const std::string& path) {
    switch (v.type()) {
        case toml::value_t::boolean:
            return v.as_boolean();
        case toml::value_t::integer:
            return v.as_integer();
        case toml::value_t::floating:
            return v.as_floating();
        case toml::value_t::string:
            return v.as_string().str;
        case toml::value_t::array: {
            json out = json::array();
            for (const auto& item : v.as_array()) out.push_back(to_json(item, file, path));
            return out;
        }
        case toml::value_t::table: {
            json out = json::object();
            for (const auto& [key, item] : v.as_table())
                out[key] = to_json(item, file, dotted(path, key));
            return out;
        }
        default:
            throw Invalid{file + ":" + std::to_string(v.location().line()) + ": " + path +
                          ": expected a number, string, boolean or array, got a date-time"};
    }
}

// The line of section.key in the document (of the nearest enclosing table it has).
std::uint_least32_t line_of(const toml::value& root, std::string_view section,
                            std::string_view key) {
    std::uint_least32_t line = 0;
    const toml::value* at = &root;
    auto step = [&](std::string_view name) {
        // "allow[2]": the third table of an array of tables ([[replica.allow]]).
        std::optional<std::size_t> index;
        if (auto open = name.find('['); open != std::string_view::npos && name.ends_with(']')) {
            index = std::strtoul(std::string(name.substr(open + 1)).c_str(), nullptr, 10);
            name = name.substr(0, open);
        }
        if (!at || !at->is_table() || name.empty()) return (at = nullptr, void());
        const auto& t = at->as_table();
        auto it = t.find(std::string(name));
        at = it == t.end() ? nullptr : &it->second;
        if (at && index) {
            at = at->is_array() && *index < at->as_array().size() ? &at->as_array()[*index]
                                                                  : nullptr;
        }
        if (at) line = at->location().line();
    };
    // Section is "daemon", "alerts", "job.ID" or "repository.NAME" (an ID has no '.').
    if (!section.empty()) {
        auto dot = section.find('.');
        step(section.substr(0, dot));
        if (dot != std::string_view::npos) step(section.substr(dot + 1));
    }
    if (!key.empty()) step(key);
    return line;
}

// toml11 throws its errors as several lines with a code excerpt; the error is its first line
// without the function name, at the line the exception carries.
std::string syntax_message(const toml::exception& e, std::string_view file) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    if (what.starts_with("[error] ")) what.erase(0, 8);
    if (what.starts_with("toml::")) {
        auto colon = what.find(": ");
        if (colon != std::string::npos) what.erase(0, colon + 2);
    }
    return std::string(file) + ":" + std::to_string(e.location().line()) + ": " + what;
}

Status run_checks(const std::function<void()>& checks) {
    try {
        checks();
        return {};
    } catch (const Invalid& e) {
        return fail(ErrorKind::invalid_argument, printable(e.message));
    }
}

std::string toml_text(const std::string& s) {
    return toml::format(toml::value(s));
}

void render_line(std::string& out, std::string_view key, const std::string& text) {
    out += key;
    out += " = ";
    out += text;
    out += '\n';
}

void render_job(std::string& out, const JobSpec& job) {
    out += "\n[job." + job.id + "]\n";
    render_line(out, "kind", toml_text(std::string(job_kind_name(job.kind))));
    render_line(out, "schedule", toml_text(job.schedule));
    render_line(out, "repository", toml_text(job.repository));
    if (kind_takes(job.kind, "vms")) {
        toml::array vms(job.vms.begin(), job.vms.end());
        render_line(out, "vms", toml::format(toml::value(vms)));
    }
    if (kind_takes(job.kind, "method")) {
        render_line(out, "method", toml_text(job.method));
        render_line(out, "group", job.group ? "true" : "false");
    }
    auto slots = keeps(job.retention);
    for (std::size_t i = 0; i < slots.size(); ++i)
        if (*slots[i]) render_line(out, kKeepKeys[i], std::to_string(**slots[i]));
    if (kind_takes(job.kind, "gc")) render_line(out, "gc", job.gc ? "true" : "false");
    if (kind_takes(job.kind, "boot")) render_line(out, "boot", job.boot ? "true" : "false");
    if (kind_takes(job.kind, "read-data-percent"))
        render_line(out, "read-data-percent", std::to_string(job.read_data_percent));
    render_line(out, "catch-up", toml_text(std::string(catch_up_name(job.catch_up))));
    if (job.after) render_line(out, "after", toml_text(*job.after));
    render_line(out, "notify", toml_text(std::string(notify_name(job.notify))));
    if (kind_takes(job.kind, "alert-after-hours"))
        render_line(out, "alert-after-hours", std::to_string(job.alert_after_hours));
    render_line(out, "enabled", job.enabled ? "true" : "false");
}

}  // namespace

std::string_view job_kind_name(JobKind kind) {
    return kJobKinds.name(kind);
}
std::string_view catch_up_name(CatchUp c) {
    return kCatchUps.name(c);
}
std::string_view notify_name(Notify n) {
    return kNotifies.name(n);
}

bool Retention::empty() const {
    return !keep_last && !keep_hourly && !keep_daily && !keep_weekly && !keep_monthly &&
           !keep_yearly;
}

const JobSpec* DaemonConfig::job(std::string_view id) const {
    for (const auto& j : jobs)
        if (j.id == id) return &j;
    return nullptr;
}

Result<DaemonConfig> parse_config(std::string_view text, std::string_view file_name) {
    const std::string file(file_name);
    toml::value root;
    try {
        std::istringstream in{std::string(text)};
        root = toml::parse(in, file);
    } catch (const toml::exception& e) {
        return fail(ErrorKind::invalid_argument, printable(syntax_message(e, file)));
    } catch (const std::exception& e) {
        return fail(ErrorKind::invalid_argument, printable(file + ": " + e.what()));
    }
    Reader reader(
        [&](std::string_view section, std::string_view key) {
            auto line = line_of(root, section, key);
            return file + (line ? ":" + std::to_string(line) : std::string()) + ": " +
                   dotted(section, key);
        },
        false);
    DaemonConfig config;
    auto status = run_checks([&] {
        config = read_config(to_json(root, file, ""), reader);
        // JSON objects are sorted by key; the file's order is the order of the tables.
        std::stable_sort(config.jobs.begin(), config.jobs.end(), [&](const auto& a, const auto& b) {
            return line_of(root, "job", a.id) < line_of(root, "job", b.id);
        });
        check_config(config, reader);
    });
    if (!status) return fail(status.error());
    return config;
}

Result<LoadedConfig> load_config(const std::filesystem::path& file) {
    std::error_code ec;
    if (!std::filesystem::exists(file, ec) && !ec)
        return LoadedConfig{DaemonConfig{}, config_digest("")};
    if (!std::filesystem::is_regular_file(file, ec))
        return fail(ErrorKind::invalid_argument,
                    "config file " + file.string() + " is not a regular file");
    // A config is a few KiB; a file far larger is a mistake (a disk image named by --config).
    constexpr std::uintmax_t kMaxConfigBytes = 4 << 20;
    if (auto size = std::filesystem::file_size(file, ec); !ec && size > kMaxConfigBytes)
        return fail(ErrorKind::invalid_argument, "config file " + file.string() + " is " +
                                                     std::to_string(size) +
                                                     " bytes: more than a config (4 MiB at most)");
    std::ifstream in(file, std::ios::binary);
    if (!in)
        return fail(ErrorKind::io,
                    "cannot read config file " + file.string() + ": " + std::strerror(errno));
    std::string bytes;
    bytes.resize(kMaxConfigBytes + 1);
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (in.bad()) return fail(ErrorKind::io, "cannot read config file " + file.string());
    bytes.resize(static_cast<std::size_t>(in.gcount()));
    if (bytes.size() > kMaxConfigBytes)
        return fail(ErrorKind::invalid_argument,
                    "config file " + file.string() + " grew past 4 MiB while it was read");
    auto config = parse_config(bytes, file.string());
    if (!config) return fail(config.error());
    return LoadedConfig{std::move(*config), config_digest(bytes)};
}

std::string render_config(const DaemonConfig& config) {
    const auto& d = config.daemon;
    std::string out = "[daemon]\n";
    render_line(out, "listen", toml_text(d.listen));
    render_line(out, "connect-uri", toml_text(d.connect_uri));
    render_line(out, "scratch-dir", toml_text(d.scratch_dir));
    render_line(out, "max-concurrent-backups", std::to_string(d.max_concurrent_backups));
    render_line(out, "max-concurrent-tasks", std::to_string(d.max_concurrent_tasks));
    render_line(out, "api-threads", std::to_string(d.api_threads));
    render_line(out, "keep-tasks", std::to_string(d.keep_tasks));
    render_line(out, "keep-task-days", std::to_string(d.keep_task_days));
    for (const auto& [name, repo] : config.repositories) {
        out += "\n[repository." + name + "]\n";
        render_line(out, "path", toml_text(repo.path.string()));
        if (!repo.password_file.empty())
            render_line(out, "password-file", toml_text(repo.password_file.string()));
        if (!repo.s3_credentials.empty())
            render_line(out, "s3-credentials", toml_text(repo.s3_credentials.string()));
        if (!repo.cacert.empty()) render_line(out, "cacert", toml_text(repo.cacert.string()));
        if (repo.s3_virtual_hosted) render_line(out, "s3-virtual-hosted", "true");
        if (repo.s3_max_rps) render_line(out, "s3-max-rps", std::to_string(repo.s3_max_rps));
        if (repo.s3_max_bandwidth_mib)
            render_line(out, "s3-max-bandwidth-mib", std::to_string(repo.s3_max_bandwidth_mib));
        if (repo.retry_lock_seconds)
            render_line(out, "retry-lock-seconds", std::to_string(repo.retry_lock_seconds));
    }
    const auto& a = config.alerts;
    out += "\n[alerts]\n";
    render_line(out, "webhook", toml_text(a.webhook));
    if (a.webhook_sha256) render_line(out, "webhook-sha256", toml_text(*a.webhook_sha256));
    render_line(out, "email", toml_text(a.email));
    render_line(out, "sendmail", toml_text(a.sendmail.string()));
    if (config.replica) {
        const auto& p = *config.replica;
        out += "\n[replica]\n";
        render_line(out, "certificate", toml_text(p.certificate.string()));
        render_line(out, "key", toml_text(p.key.string()));
        render_line(out, "ca", toml_text(p.ca.string()));
        if (!p.listen.empty()) render_line(out, "listen", toml_text(p.listen));
        if (!p.endpoint.empty()) render_line(out, "endpoint", toml_text(p.endpoint));
        for (const auto& a : p.allow) {
            out += "\n[[replica.allow]]\n";
            render_line(out, "subject", toml_text(a.subject));
            render_line(out, "storage", toml_text(a.storage.string()));
        }
    }
    for (const auto& job : config.jobs) render_job(out, job);
    return out;
}

std::string config_digest(std::string_view bytes) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_Digest(bytes.data(), bytes.size(), md, &size, EVP_sha256(), nullptr);
    return hex_encode({md, size});
}

Status validate_config(const DaemonConfig& config) {
    Reader reader(
        [](std::string_view section, std::string_view key) { return dotted(section, key); }, false);
    return run_checks([&] { check_config(config, reader); });
}

nlohmann::json job_to_json(const JobSpec& job) {
    json j = {{"id", job.id},
              {"kind", job_kind_name(job.kind)},
              {"schedule", job.schedule},
              {"repository", job.repository},
              {"catch_up", catch_up_name(job.catch_up)},
              {"notify", notify_name(job.notify)},
              {"enabled", job.enabled}};
    if (job.after) j["after"] = *job.after;
    if (kind_takes(job.kind, "vms")) j["vms"] = job.vms;
    if (kind_takes(job.kind, "method")) {
        j["method"] = job.method;
        j["group"] = job.group;
        j["alert_after_hours"] = job.alert_after_hours;
    }
    auto slots = keeps(job.retention);
    for (std::size_t i = 0; i < slots.size(); ++i)
        if (*slots[i]) {
            std::string key(kKeepKeys[i]);
            std::replace(key.begin(), key.end(), '-', '_');
            j[key] = **slots[i];
        }
    if (kind_takes(job.kind, "gc")) j["gc"] = job.gc;
    if (kind_takes(job.kind, "boot")) j["boot"] = job.boot;
    if (kind_takes(job.kind, "read-data-percent")) j["read_data_percent"] = job.read_data_percent;
    return j;
}

Result<JobSpec> job_from_json(const nlohmann::json& body) {
    Reader reader([](std::string_view, std::string_view key) { return dotted("job", key); }, true);
    JobSpec job;
    auto status = run_checks([&] {
        if (!body.is_object()) reader.wrong_type("", "", "an object", body);
        auto id = reader.string(body, "", "id");
        if (!id) reader.fail("", "id", "missing");
        job = read_job(body, *id, reader, "", true);
        check_job(job, reader, "");
    });
    if (!status) return fail(status.error());
    return job;
}

}  // namespace vmshadow::daemon
