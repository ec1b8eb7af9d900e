// SPDX-License-Identifier: MIT
// Offline initial replication on the replica host: the folder export-initial wrote
// (replica_host.h) applied through the protocol's own routes, as if its primary had sent it,
// so it is checked exactly as a network cycle is: the subject on the allow list, the
// announcement, the chunk bodies, their count, frames and digest.
#include <fstream>
#include <system_error>

#include "replica/cycle_format.h"
#include "replica/replica_host_impl.h"
#include "replica/replica_protocol.h"
#include "replica/replica_routes.h"

namespace vmshadow::replica {

using nlohmann::json;

Result<std::string> read_bounded_file(const std::filesystem::path& path, std::uint64_t max_bytes) {
    std::error_code ec;
    auto size = std::filesystem::file_size(path, ec);
    if (ec)
        return fail(
            ec == std::errc::no_such_file_or_directory ? ErrorKind::not_found : ErrorKind::io,
            path.string() + ": " + ec.message());
    if (size > max_bytes)
        return fail(ErrorKind::invalid_argument, path.string() + ": " + std::to_string(size) +
                                                     " bytes, more than the " +
                                                     std::to_string(max_bytes) + " allowed");
    std::ifstream in(path, std::ios::binary);
    std::string text(size, '\0');
    if (!in.read(text.data(), static_cast<std::streamsize>(size)) ||
        in.gcount() != static_cast<std::streamsize>(size))
        return fail(ErrorKind::io, path.string() + ": read failed");
    return text;
}

namespace {

// One request to our own routes as `subject`; the JSON answer, or its error.
Result<json> call(ReplicaHost& host, const std::string& subject, std::string method,
                  std::string path, std::string body) {
    net::HttpRequest request;
    request.method = std::move(method);
    request.path = std::string(kPrefix) + path;
    request.target = request.path;
    request.body = std::move(body);
    request.peer.client_certificate_subject = subject;
    request.peer.address = "import-initial";
    auto response = host.handle(request);
    json answer = json::parse(response.body, nullptr, false);
    if (response.status >= 300) {
        std::string message =
            answer.is_object() && answer.contains("error") && answer["error"].is_string()
                ? answer["error"].get<std::string>()
                : "HTTP " + std::to_string(response.status);
        return fail(net::error_kind_for_status(response.status), message);
    }
    if (answer.is_discarded())
        return fail(ErrorKind::internal, "unreadable answer to " + request.path);
    return answer;
}

struct CycleFile {
    std::string subject, uuid, name, cycle_id;
    json vm, begin, commit;
    std::uint64_t chunks = 0;
};

Result<CycleFile> read_cycle_file(const std::filesystem::path& dir) {
    const auto path = dir / "cycle.json";
    auto text = read_bounded_file(path, 2 * kMaxJsonBody);
    if (!text && text.error().kind() == ErrorKind::not_found)
        return fail(ErrorKind::not_found,
                    "no cycle.json in " + dir.string() +
                        ": not a folder `vmshadow replica export-initial` wrote, or its export "
                        "was cut off (cycle.json is written last); export again");
    if (!text) return fail(text.error());
    auto j = routes::parse_object(*text, 2 * kMaxJsonBody);
    if (!j) return fail(j.error().with_context(path.string()));
    auto bad = [&](const std::string& what) {
        return fail(ErrorKind::invalid_argument, path.string() + ": " + what);
    };
    CycleFile f;
    for (const char* key : {"vm", "begin", "commit"})
        if (!j->contains(key) || !(*j)[key].is_object())
            return bad(std::string("'") + key + "' must be an object");
    if (!j->contains("primary_subject") || !(*j)["primary_subject"].is_string())
        return bad("'primary_subject' must be a string");
    f.subject = (*j)["primary_subject"].get<std::string>();
    f.vm = (*j)["vm"];
    f.begin = (*j)["begin"];
    f.commit = (*j)["commit"];
    auto announcement = routes::parse_announcement(f.vm);
    if (!announcement) return fail(announcement.error().with_context(path.string()));
    f.uuid = announcement->uuid;
    f.name = announcement->name;
    auto begin = routes::parse_begin(f.begin);
    if (!begin) return fail(begin.error().with_context(path.string()));
    f.cycle_id = begin->header.id;
    auto commit = routes::parse_commit(f.commit);
    if (!commit) return fail(commit.error().with_context(path.string()));
    f.chunks = commit->chunks;
    return f;
}

std::filesystem::path chunk_path(const std::filesystem::path& dir, std::uint64_t seq) {
    return dir / ("chunk-" + std::to_string(seq) + ".bin");
}

}  // namespace

Result<json> ReplicaHost::import_initial(const std::filesystem::path& dir,
                                         TaskContext* given_task) {
    std::optional<TaskContext> fallback;
    TaskContext& task = given_task ? *given_task : fallback.emplace();
    const std::string what = "import-initial from " + dir.string();
    auto file = read_cycle_file(dir);
    if (!file) return fail(file.error().with_context(what));
    if (!impl_->allowed(file->subject))
        return fail(ErrorKind::permission,
                    what + ": primary '" + file->subject +
                        "' is not allowed to replicate to this host (add it as a "
                        "[[replica.allow]] subject)");
    std::error_code ec;
    if (std::filesystem::exists(chunk_path(dir, file->chunks), ec))
        return fail(ErrorKind::invalid_argument, what + ": more chunk files than the " +
                                                     std::to_string(file->chunks) +
                                                     " cycle.json counts");
    const std::string vm_path = "/vms/" + file->uuid;
    const std::string cycle_path = vm_path + "/cycles/" + file->cycle_id;
    task.phase("announce");
    if (auto r = call(*this, file->subject, "PUT", vm_path, file->vm.dump()); !r)
        return fail(r.error().with_context(what));
    if (auto r = call(*this, file->subject, "POST", vm_path + "/cycles", file->begin.dump()); !r)
        return fail(r.error().with_context(what));
    auto abandon = [&](const Error& error) {
        (void)call(*this, file->subject, "DELETE", cycle_path, "");
        return fail(error.with_context(what));
    };
    task.phase("write", 0, file->chunks, file->name);
    for (std::uint64_t seq = 0; seq < file->chunks; ++seq) {
        if (auto c = task.check_cancel(what); !c) return abandon(c.error());
        auto body = read_bounded_file(chunk_path(dir, seq), kMaxChunkBytes);
        if (!body) return abandon(body.error());
        task.add_bytes(body->size());
        if (auto r = call(*this, file->subject, "PUT",
                          cycle_path + "/chunks/" + std::to_string(seq), std::move(*body));
            !r)
            return abandon(r.error());
        task.items_done(seq + 1);
    }
    task.phase("commit");
    auto committed =
        call(*this, file->subject, "POST", cycle_path + "/commit", file->commit.dump());
    if (!committed) return fail(committed.error().with_context(what));
    impl_->log(LogLevel::info, "VM " + file->name + ": initial copy imported from " + dir.string());
    return json{{"vm", file->name}, {"point", (*committed)["point"]}};
}

}  // namespace vmshadow::replica
