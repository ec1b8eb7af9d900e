// SPDX-License-Identifier: MIT
// The records of a Repository (repository.h): restore points listed and resolved from commit
// records and annotations, commits, annotations and index files written, forget, quarantine.
#include <algorithm>
#include <ctime>
#include <set>

#include "repo/format.h"
#include "repo/repository.h"
#include "repo/repository_detail.h"

namespace vmshadow::repo {

using nlohmann::json;

Hash256 Repository::point_id(const RestorePoint& point) const {
    std::string text = manifest_to_json(point).dump();
    return codec_.id_of(as_bytes(text));
}

Result<PointListing> Repository::list_points() const {
    PointListing out;
    auto names = env_.list(dir(format::kCommitsDir));
    if (!names) return std::unexpected(names.error());
    std::set<Hash256> seen;
    std::unordered_map<Hash256, std::size_t, Hash256Hasher> by_id;
    for (const auto& name : *names) {
        if (!is_hex_name(name)) continue;
        std::string path = dir(format::kCommitsDir) + "/" + name;
        auto bytes = read_file(env_, path);
        Result<Bytes> plain = bytes ? codec_.unseal(*bytes, kCommitDomain) : bytes;
        if (plain && sha256(*bytes) != *Hash256::from_hex(name))
            plain = fail(ErrorKind::corruption, "file content does not match its name");
        Result<json> j = plain ? parse_json(*plain, "commit record") : fail(plain.error());
        if (!j) {
            out.damaged.push_back(j.error().with_context("commit record " + path));
            out.damaged_files.push_back(path);
            continue;
        }
        if (j->value("format_version", 0) > format::kRecordVersion) {
            out.damaged.push_back(
                Error(ErrorKind::unsupported,
                      "commit record " + path + " has a newer format version (upgrade vmshadow)"));
            continue;
        }
        bool record_damaged = false;
        for (const auto& m : j->value("points", json::array())) {
            auto p = manifest_from_json(m);
            if (!p) {
                out.damaged.push_back(p.error().with_context("commit record " + path));
                if (!record_damaged) out.damaged_files.push_back(path);
                record_damaged = true;
                continue;
            }
            p->id = point_id(*p);
            p->commit = *Hash256::from_hex(name);
            if (!seen.insert(p->id).second) continue;  // a forget was interrupted
            by_id[p->id] = out.points.size();
            out.points.push_back(std::move(*p));
        }
    }
    std::stable_sort(out.points.begin(), out.points.end(), [](const auto& a, const auto& b) {
        return a.time_us != b.time_us ? a.time_us < b.time_us : a.id < b.id;
    });
    by_id.clear();
    for (std::size_t i = 0; i < out.points.size(); ++i) by_id[out.points[i].id] = i;
    auto ann = env_.list(dir(format::kAnnotationsDir));
    if (!ann) return std::unexpected(ann.error());
    for (const auto& name : *ann) {
        if (!is_hex_name(name)) continue;
        std::string path = dir(format::kAnnotationsDir) + "/" + name;
        auto bytes = read_file(env_, path);
        Result<Bytes> plain = bytes ? codec_.unseal(*bytes, kAnnotationDomain) : bytes;
        Result<json> j = plain ? parse_json(*plain, "annotation") : fail(plain.error());
        if (!j) {
            out.damaged.push_back(j.error().with_context("annotation " + path));
            out.damaged_files.push_back(path);
            continue;
        }
        auto point = Hash256::from_hex(j->value("point", ""));
        if (!point || !by_id.contains(*point)) {  // its point was forgotten
            out.orphan_annotations.push_back(path);
            continue;
        }
        Annotation a{*Hash256::from_hex(name), *point, j->value("time", ""), j->value("kind", ""),
                     j->value("data", json::object())};
        out.points[by_id[*point]].annotations.push_back(std::move(a));
    }
    for (auto& p : out.points)
        std::sort(p.annotations.begin(), p.annotations.end(),
                  [](const auto& a, const auto& b) { return a.time < b.time; });
    return out;
}

Result<RestorePoint> Repository::resolve(const PointListing& listing, std::string_view spec) {
    if (auto at = spec.find('@'); at != std::string_view::npos) {
        std::string_view name = spec.substr(0, at), which = spec.substr(at + 1);
        if (which != "latest")
            return fail(ErrorKind::invalid_argument,
                        "unknown point selector '@" + std::string(which) + "' (use NAME@latest)");
        if (name.empty())
            return fail(ErrorKind::invalid_argument,
                        "'" + std::string(spec) + "' names no VM or image (use NAME@latest)");
        for (auto it = listing.points.rbegin(); it != listing.points.rend(); ++it)
            if (it->vm == name) return *it;
        return fail(ErrorKind::not_found, "no restore point of '" + std::string(name) + "'");
    }
    // Not an id at all (a VM name without @latest): the spec is wrong, not the point missing.
    if (spec.find_first_not_of("0123456789abcdef") != std::string_view::npos)
        return fail(
            ErrorKind::invalid_argument,
            "'" + std::string(spec) + "' is neither a point id (hex digits) nor NAME@latest");
    if (spec.size() < 4)
        return fail(ErrorKind::invalid_argument, "point id prefix '" + std::string(spec) +
                                                     "' is too short (use at least 4 digits)");
    const RestorePoint* found = nullptr;
    for (const auto& p : listing.points) {
        if (p.id.hex().starts_with(spec)) {
            if (found)
                return fail(ErrorKind::invalid_argument,
                            "point id prefix '" + std::string(spec) + "' is ambiguous");
            found = &p;
        }
    }
    if (!found) return fail(ErrorKind::not_found, "no restore point " + std::string(spec));
    return *found;
}

Result<Hash256> Repository::write_index_file(const std::vector<PackInfo>& packs) const {
    return write_sealed(*this, format::kIndexDir, encode_index_file(packs, codec_, pack_version()));
}

Result<Hash256> Repository::write_commit(std::vector<RestorePoint>& points) const {
    json arr = json::array();
    for (auto& p : points) {
        p.id = point_id(p);
        arr.push_back(manifest_to_json(p));
    }
    json j{{"format_version", format::kRecordVersion},
           {"time", iso8601_utc(unix_seconds(clock_->now()))},
           {"points", std::move(arr)}};
    std::string text = j.dump();
    auto id = write_sealed(*this, format::kCommitsDir, codec_.seal(as_bytes(text), kCommitDomain));
    if (id)
        for (auto& p : points) p.commit = *id;
    return id;
}

Status Repository::annotate(const Hash256& point, const std::string& kind, const json& data) const {
    json j{{"format_version", format::kRecordVersion},
           {"point", point.hex()},
           {"time", iso8601_utc(unix_seconds(clock_->now()))},
           {"kind", kind},
           {"data", data},
           {"nonce", ""}};
    auto nonce = random_bytes(16);  // equal annotations stay distinct
    if (!nonce) return std::unexpected(nonce.error());
    j["nonce"] = sha256(*nonce).short_hex();
    std::string text = j.dump();
    auto id = write_sealed(*this, format::kAnnotationsDir,
                           codec_.seal(as_bytes(text), kAnnotationDomain));
    if (!id) return std::unexpected(id.error());
    return {};
}

Status Repository::forget(const std::vector<Hash256>& points) const {
    std::set<Hash256> gone(points.begin(), points.end());
    auto names = env_.list(dir(format::kCommitsDir));
    if (!names) return std::unexpected(names.error());
    for (const auto& name : *names) {
        if (!is_hex_name(name)) continue;
        std::string path = dir(format::kCommitsDir) + "/" + name;
        auto bytes = read_file(env_, path);
        if (!bytes) return std::unexpected(bytes.error());
        auto plain = codec_.unseal(*bytes, kCommitDomain);
        if (!plain) continue;  // damaged: check reports it; forget leaves it alone
        auto j = parse_json(*plain, path);
        if (!j) continue;
        json kept = json::array();
        bool changed = false;
        for (const auto& m : j->value("points", json::array())) {
            auto p = manifest_from_json(m);
            if (p && gone.contains(point_id(*p)))
                changed = true;
            else
                kept.push_back(m);
        }
        if (!changed) continue;
        if (!kept.empty()) {
            (*j)["points"] = std::move(kept);
            std::string text = j->dump();
            auto id = write_sealed(*this, format::kCommitsDir,
                                   codec_.seal(as_bytes(text), kCommitDomain));
            if (!id) return std::unexpected(id.error());
        }
        if (auto st = env_.remove(path); !st) return st;
        if (auto st = env_.sync_dir(dir(format::kCommitsDir)); !st) return st;
    }
    return {};
}

Result<std::size_t> Repository::quarantine(const std::string& path) const {
    std::string parent = path.substr(0, path.rfind('/'));
    std::string kind = parent.substr(parent.rfind('/') + 1);
    std::string name = path.substr(path.rfind('/') + 1);
    std::size_t kept = 0;
    if (kind == format::kCommitsDir) {
        auto bytes = read_file(env_, path);
        if (!bytes && bytes.error().kind() != ErrorKind::corruption)
            return std::unexpected(bytes.error());
        auto plain = bytes ? codec_.unseal(*bytes, kCommitDomain) : Result<Bytes>(bytes);
        auto j = plain ? parse_json(*plain, path) : Result<json>(fail(plain.error()));
        if (j && j->value("format_version", 0) <= format::kRecordVersion) {
            json sound = json::array();
            for (const auto& m : j->value("points", json::array()))
                if (manifest_from_json(m)) sound.push_back(m);
            if (!sound.empty()) {
                kept = sound.size();
                (*j)["points"] = std::move(sound);
                std::string text = j->dump();
                auto id = write_sealed(*this, format::kCommitsDir,
                                       codec_.seal(as_bytes(text), kCommitDomain));
                if (!id) return std::unexpected(id.error());
            }
        }
    }
    std::string qdir = dir(format::kQuarantineDir);
    if (auto st = env_.make_dir(qdir); !st) return std::unexpected(st.error());
    if (auto st = env_.rename(path, qdir + "/" + kind + "-" + name); !st)
        return std::unexpected(st.error());
    if (auto st = env_.sync_dir(qdir); !st) return std::unexpected(st.error());
    if (auto st = env_.sync_dir(parent); !st) return std::unexpected(st.error());
    return kept;
}

}  // namespace vmshadow::repo
