// SPDX-License-Identifier: MIT
#include "vss/exec_writer.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "common/child_process.h"

extern char** environ;

namespace vmshadow::vss {
namespace {

using std::chrono::milliseconds;

std::string join(const std::vector<std::string>& items) {
    std::string out;
    for (const std::string& item : items) {
        if (!out.empty()) out += ' ';
        out += item;
    }
    return out;
}

// all / none / undefined when every component agrees, else failed.
std::string restore_status(const std::vector<ComponentEntry>& components) {
    if (components.empty()) return "undefined";
    FileRestoreStatus first = components.front().file_restore_status;
    for (const ComponentEntry& c : components) {
        if (c.file_restore_status != first) return "failed";
    }
    return std::string(file_restore_status_name(first));
}

std::vector<std::string> environment_for(const ExecWriterConfig& config,
                                         const EventContext& context, milliseconds timeout) {
    std::map<std::string, std::string> env;
    for (char** e = environ; e && *e; ++e) {
        std::string entry(*e);
        auto eq = entry.find('=');
        if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
    for (const auto& [key, value] : config.environment) env[key] = value;
    std::vector<std::string> components;
    for (const ComponentEntry& c : context.components) {
        components.push_back(c.key.logical_path.empty() ? c.key.name
                                                        : c.key.logical_path + "/" + c.key.name);
    }
    env["VMSHADOW_EVENT"] = event_name(context.event);
    env["VMSHADOW_OPERATION"] = operation_name(context.operation);
    env["VMSHADOW_BACKUP_ID"] = context.backup_id;
    env["VMSHADOW_BACKUP_TYPE"] = backup_type_name(context.backup_type);
    env["VMSHADOW_VMS"] = join(context.vms);
    env["VMSHADOW_WRITER"] = config.name;
    env["VMSHADOW_TIMEOUT"] = std::to_string(std::max<long>(1, timeout.count() / 1000));
    env["VMSHADOW_COMPONENTS"] = join(components);
    env["VMSHADOW_FILE_RESTORE_STATUS"] = restore_status(context.components);
    std::vector<std::string> out;
    for (const auto& [key, value] : env) out.push_back(key + "=" + value);
    return out;
}

std::string with_detail(std::string message, const CommandResult& result) {
    std::string detail = last_line_of(result.stderr_text);
    if (!detail.empty()) message += ": " + detail;
    return message;
}

}  // namespace

std::expected<std::string, Veto> ExecWriter::call(const EventContext& context) const {
    const milliseconds own = config_.timeout_for(context.event);
    const auto own_deadline = EventDeadline::clock::now() + own;
    EventDeadline deadline(std::min(own_deadline, context.deadline.at()),
                           context.deadline.stop_token());
    const milliseconds limit = deadline.remaining();
    std::vector<std::string> argv = config_.command;
    argv.emplace_back(event_name(context.event));
    auto result = run_command(argv, {.environment = environment_for(config_, context, limit),
                                     .deadline = deadline.at(),
                                     .stop = deadline.stop_token()});
    if (!result) return std::unexpected(veto_nonretryable(result.error().message()));
    using Ending = CommandResult::Ending;
    switch (result->ending) {
        case Ending::timed_out:
        case Ending::cancelled:
            return std::unexpected(Veto{
                FailureCode::timeout,
                with_detail(argv[0] + " " + argv.back() + " did not finish within " +
                                std::to_string(limit.count()) + " ms; its process group was killed",
                            *result)});
        case Ending::signalled:
            return std::unexpected(veto_nonretryable(
                with_detail("killed by signal " + std::to_string(result->signal), *result)));
        case Ending::exited:
            break;
    }
    if (result->exit_code == 0) return std::move(result->stdout_text);
    std::string message = with_detail("exit status " + std::to_string(result->exit_code), *result);
    if (result->exit_code == kExecExitRetryable) {
        return std::unexpected(veto_retryable(std::move(message)));
    }
    return std::unexpected(veto_nonretryable(std::move(message)));
}

WriterResult ExecWriter::run(EventContext& context) const {
    if (!config_.wants(context.event)) return {};
    auto output = call(context);
    if (!output) return std::unexpected(output.error());
    return {};
}

WriterMetadata ExecWriter::default_metadata() const {
    WriterMetadata metadata;
    metadata.writer_id = id();
    metadata.writer_name = config_.name;
    metadata.restore_method = RestoreMethod::custom;
    Component component;
    component.logical_path = "exec";
    component.name = config_.name;
    component.caption = "exec writer " + config_.name + " (" + config_.source.string() + ")";
    metadata.components.push_back(std::move(component));
    return metadata;
}

std::expected<WriterMetadata, Veto> ExecWriter::identify(EventContext& context) {
    if (!config_.wants(Event::identify)) return default_metadata();
    auto output = call(context);
    if (!output) return std::unexpected(output.error());
    if (output->find_first_not_of(" \t\r\n") == std::string::npos) return default_metadata();
    auto json = nlohmann::json::parse(*output, nullptr, false);
    if (json.is_discarded() || !json.is_object()) {
        return std::unexpected(
            veto_nonretryable("identify printed something that is not a "
                              "JSON object"));
    }
    auto components = components_from_json(json);
    if (!components) return std::unexpected(veto_nonretryable(components.error().message()));
    WriterMetadata metadata = default_metadata();
    if (!components->empty()) metadata.components = std::move(*components);
    return metadata;
}

Result<std::vector<std::shared_ptr<Writer>>> load_exec_writers(const std::filesystem::path& dir) {
    auto configs = load_exec_writer_configs(dir);
    if (!configs) return fail(configs.error());
    std::vector<std::shared_ptr<Writer>> writers;
    for (auto& config : *configs)
        writers.push_back(std::make_shared<ExecWriter>(std::move(config)));
    return writers;
}

}  // namespace vmshadow::vss
