// SPDX-License-Identifier: MIT
#include "vss/writer_report.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "common/atomic_file.h"
#include "common/os_error.h"
#include "common/time_format.h"

namespace vmshadow::vss {
namespace {

constexpr const char* kFormatName = "vmshadow-writer-state";

}  // namespace

std::string utc_timestamp_now() {
    return iso8601_utc(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now()));
}

void to_json(nlohmann::json& out, const WriterReport& report) {
    out = nlohmann::json{{"format", kFormatName},
                         {"version", WriterReport::kFormatVersion},
                         {"backup_id", report.backup_id},
                         {"operation", operation_name(report.operation)},
                         {"started", report.started},
                         {"finished", report.finished},
                         {"outcome", report.succeeded ? "succeeded" : "failed"},
                         {"error", nullptr},
                         {"error_kind", nullptr},
                         {"writers", report.writers}};
    if (report.error) {
        out["error"] = report.error->message();
        out["error_kind"] = kind_name(report.error->kind());
    }
}

Result<WriterReport> writer_report_from_json(const nlohmann::json& in) {
    try {
        if (in.value("format", "") != kFormatName) {
            return fail(ErrorKind::corruption, "not a vmshadow writer state file");
        }
        if (int version = in.at("version").get<int>(); version != WriterReport::kFormatVersion) {
            return fail(ErrorKind::unsupported,
                        "writer state version " + std::to_string(version) + " is not supported");
        }
        WriterReport report;
        report.backup_id = in.at("backup_id").get<std::string>();
        report.operation =
            in.value("operation", "backup") == "restore" ? Operation::restore : Operation::backup;
        report.started = in.value("started", "");
        report.finished = in.value("finished", "");
        report.succeeded = in.at("outcome").get<std::string>() == "succeeded";
        if (in.contains("error") && !in["error"].is_null()) {
            auto kind = parse_kind_name(in.value("error_kind", "internal"));
            report.error =
                Error(kind.value_or(ErrorKind::internal), in["error"].get<std::string>());
        }
        for (const auto& w : in.at("writers")) {
            auto status = writer_status_from_json(w);
            if (!status) return fail(status.error());
            report.writers.push_back(std::move(*status));
        }
        return report;
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::corruption, std::string("writer state: ") + e.what());
    }
}

Status save_writer_report(const std::filesystem::path& path, const WriterReport& report) {
    nlohmann::json json = report;
    return with_context(write_file_atomically(path, json.dump(2) + "\n"),
                        "writer state file " + path.string());
}

Result<std::optional<WriterReport>> load_writer_report(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) {
        if (errno == ENOENT) return std::optional<WriterReport>{};
        return fail(os_error("cannot read " + path.string(), errno));
    }
    std::stringstream text;
    text << in.rdbuf();
    auto json = nlohmann::json::parse(text.str(), nullptr, false);
    if (json.is_discarded()) return fail(ErrorKind::corruption, path.string() + " is not JSON");
    auto report = writer_report_from_json(json);
    if (!report) return fail(report.error().with_context(path.string()));
    return std::optional<WriterReport>(std::move(*report));
}

}  // namespace vmshadow::vss
