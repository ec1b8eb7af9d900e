// SPDX-License-Identifier: MIT
#include "vss/exec_writer_config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace vmshadow::vss {
namespace {

using std::chrono::milliseconds;

Result<milliseconds> seconds_from(const nlohmann::json& value, std::string_view what) {
    if (!value.is_number() || value.get<double>() <= 0) {
        return fail(ErrorKind::invalid_argument,
                    std::string(what) + " must be a positive number of seconds");
    }
    return milliseconds(static_cast<std::int64_t>(value.get<double>() * 1000));
}

bool valid_name(std::string_view name) {
    return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    });
}

Result<std::set<Event>> events_from(const nlohmann::json& in) {
    std::set<Event> events;
    if (!in.contains("events")) {
        events.insert(std::begin(kAllEvents), std::end(kAllEvents));
        return events;
    }
    for (const auto& e : in.at("events")) {
        auto event = parse_event(e.get<std::string>());
        if (!event) return fail(ErrorKind::invalid_argument, "unknown event " + e.dump());
        events.insert(*event);
    }
    return events;
}

Status read_timeouts(const nlohmann::json& in, ExecWriterConfig& config) {
    if (in.contains("timeout_seconds")) {
        auto t = seconds_from(in["timeout_seconds"], "timeout_seconds");
        if (!t) return fail(t.error());
        config.default_timeout = *t;
    }
    const nlohmann::json timeouts = in.value("timeouts", nlohmann::json::object());
    for (const auto& [name, value] : timeouts.items()) {
        auto event = parse_event(name);
        if (!event) return fail(ErrorKind::invalid_argument, "timeouts: unknown event " + name);
        auto t = seconds_from(value, "timeouts." + name);
        if (!t) return fail(t.error());
        config.timeouts[*event] = *t;
    }
    return {};
}

Result<ExecWriterConfig> parse_object(const nlohmann::json& in) {
    ExecWriterConfig config;
    config.name = in.at("name").get<std::string>();
    if (!valid_name(config.name)) {
        return fail(ErrorKind::invalid_argument,
                    "name must be letters, digits, '.', '_' or '-': '" + config.name + "'");
    }
    const auto& command = in.at("command");
    if (command.is_string()) {
        config.command = {command.get<std::string>()};
    } else {
        config.command = command.get<std::vector<std::string>>();
    }
    if (config.command.empty() || config.command[0].empty()) {
        return fail(ErrorKind::invalid_argument, "command is empty");
    }
    auto events = events_from(in);
    if (!events) return fail(events.error());
    config.events = std::move(*events);
    if (auto timeouts = read_timeouts(in, config); !timeouts) return fail(timeouts.error());
    config.environment = in.value("environment", std::map<std::string, std::string>{});
    for (const auto& [key, value] : config.environment) {
        if (key.empty() || key.find('=') != std::string::npos) {
            return fail(ErrorKind::invalid_argument, "bad environment variable name '" + key + "'");
        }
    }
    return config;
}

}  // namespace

milliseconds ExecWriterConfig::timeout_for(Event event) const {
    auto it = timeouts.find(event);
    return it == timeouts.end() ? default_timeout : it->second;
}

Result<ExecWriterConfig> parse_exec_writer_config(std::string_view json_text,
                                                  const std::filesystem::path& source) {
    const std::string where = "exec writer config " + source.string();
    auto json = nlohmann::json::parse(json_text, nullptr, false, true);
    if (json.is_discarded() || !json.is_object()) {
        return fail(ErrorKind::invalid_argument, where + ": not a JSON object");
    }
    try {
        auto config = parse_object(json);
        if (!config) return fail(config.error().with_context(where));
        config->source = source;
        return config;
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::invalid_argument, where + ": " + e.what());
    }
}

Result<std::vector<ExecWriterConfig>> load_exec_writer_configs(const std::filesystem::path& dir) {
    std::error_code ec;
    if (!std::filesystem::exists(dir, ec)) return std::vector<ExecWriterConfig>{};
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        if (entry.path().extension() == ".json" && !entry.is_directory()) {
            files.push_back(entry.path());
        }
    }
    if (ec) return fail(ErrorKind::io, "cannot list " + dir.string() + ": " + ec.message());
    std::sort(files.begin(), files.end());
    std::vector<ExecWriterConfig> configs;
    for (const auto& file : files) {
        std::ifstream in(file);
        if (!in) return fail(ErrorKind::io, "cannot read " + file.string());
        std::stringstream text;
        text << in.rdbuf();
        auto config = parse_exec_writer_config(text.str(), file);
        if (!config) return fail(config.error());
        for (const auto& other : configs) {
            if (other.name == config->name) {
                return fail(ErrorKind::invalid_argument,
                            "exec writer '" + config->name + "' is defined twice: " +
                                other.source.string() + " and " + file.string());
            }
        }
        configs.push_back(std::move(*config));
    }
    return configs;
}

}  // namespace vmshadow::vss
