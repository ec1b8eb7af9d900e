// SPDX-License-Identifier: MIT
#include "repo/manifest.h"

#include <ctime>

namespace vmshadow::repo {
namespace {

using nlohmann::json;

json map_json(const MapRef& m) {
    return {{"root", m.root.hex()}, {"levels", m.levels}};
}

// `owner` names the disk or file for the error; json's own type errors are caught by
// manifest_from_json.
Result<MapRef> map_from(const json& j, const std::string& owner) {
    auto root = Hash256::from_hex(j.at("root").get<std::string>());
    if (!root)
        return fail(ErrorKind::corruption,
                    "manifest is malformed: " + owner + " has a bad map root id");
    return MapRef{*root, j.at("levels").get<std::uint32_t>()};
}

const char* const kKnown[] = {"vm",       "time",    "time_us", "consistency", "parent",
                              "metadata", "timings", "disks",   "files",       "bytes_added"};

}  // namespace

const DiskRecord* RestorePoint::disk(std::string_view name) const {
    for (const auto& d : disks)
        if (d.name == name) return &d;
    return nullptr;
}

json manifest_to_json(const RestorePoint& p) {
    json j = p.extra.is_object() ? p.extra : json::object();
    j["vm"] = p.vm;
    j["time"] = p.time;
    j["time_us"] = p.time_us;
    j["consistency"] = p.consistency;
    if (p.parent) j["parent"] = p.parent->hex();
    j["metadata"] = p.metadata;
    j["timings"] = p.timings;
    j["bytes_added"] = p.bytes_added;
    json disks = json::array();
    for (const auto& d : p.disks)
        disks.push_back({{"name", d.name},
                         {"size", d.size},
                         {"map", map_json(d.map)},
                         {"info", d.info},
                         {"bytes_added", d.bytes_added}});
    j["disks"] = std::move(disks);
    json files = json::array();
    for (const auto& f : p.files)
        files.push_back(
            {{"name", f.name}, {"role", f.role}, {"size", f.size}, {"map", map_json(f.map)}});
    j["files"] = std::move(files);
    return j;
}

Result<RestorePoint> manifest_from_json(const json& j) {
    try {
        RestorePoint p;
        p.vm = j.at("vm").get<std::string>();
        p.time = j.at("time").get<std::int64_t>();
        p.time_us = j.value("time_us", p.time * 1000000);
        p.consistency = j.at("consistency").get<std::string>();
        if (j.contains("parent")) p.parent = Hash256::from_hex(j["parent"].get<std::string>());
        p.metadata = j.value("metadata", json::object());
        p.timings = j.value("timings", json::object());
        p.bytes_added = j.value("bytes_added", std::uint64_t{0});
        for (const auto& d : j.at("disks")) {
            DiskRecord r;
            r.name = d.at("name").get<std::string>();
            r.size = d.at("size").get<std::uint64_t>();
            auto map = map_from(d.at("map"), "disk " + r.name);
            if (!map) return std::unexpected(map.error());
            r.map = *map;
            r.info = d.value("info", json::object());
            r.bytes_added = d.value("bytes_added", std::uint64_t{0});
            p.disks.push_back(std::move(r));
        }
        for (const auto& f : j.value("files", json::array())) {
            FileRecord r;
            r.name = f.at("name").get<std::string>();
            r.role = f.value("role", "");
            r.size = f.at("size").get<std::uint64_t>();
            auto map = map_from(f.at("map"), "file " + r.name);
            if (!map) return std::unexpected(map.error());
            r.map = *map;
            p.files.push_back(std::move(r));
        }
        p.extra = j;
        for (const char* k : kKnown) p.extra.erase(k);
        return p;
    } catch (const json::exception& e) {
        return fail(ErrorKind::corruption, std::string("manifest is malformed: ") + e.what());
    }
}

json point_summary_json(const RestorePoint& p) {
    json disks = json::array();
    for (const auto& d : p.disks)
        disks.push_back(
            {{"name", d.name}, {"size", d.size}, {"info", d.info}, {"bytes_added", d.bytes_added}});
    json files = json::array();
    for (const auto& f : p.files)
        files.push_back({{"name", f.name}, {"role", f.role}, {"size", f.size}});
    json annotations = json::array();
    for (const auto& a : p.annotations)
        annotations.push_back({{"time", a.time}, {"kind", a.kind}, {"data", a.data}});
    json j{{"id", p.id.hex()},
           {"short_id", p.id.short_hex()},
           {"vm", p.vm},
           {"time", iso8601_utc(p.time)},
           {"consistency", p.consistency},
           {"bytes_added", p.bytes_added},
           {"disks", disks},
           {"files", files},
           {"timings", p.timings},
           {"metadata", p.metadata},
           {"commit", p.commit.hex()},
           {"annotations", annotations}};
    if (p.parent) j["parent"] = p.parent->hex();
    return j;
}

}  // namespace vmshadow::repo
