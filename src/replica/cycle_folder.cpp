// SPDX-License-Identifier: MIT
#include "replica/cycle_folder.h"

#include "common/atomic_file.h"

namespace vmshadow::replica {
namespace {

using json = nlohmann::json;

class FolderClient final : public ReplicaClient {
  public:
    FolderClient(std::filesystem::path dir, json announcement, std::string subject)
        : dir_(std::move(dir)),
          peer_("folder " + dir_.string()),
          announcement_(std::move(announcement)),
          subject_(std::move(subject)) {}

    const std::string& peer() const override { return peer_; }
    Result<json> hello() override { return unsupported(); }
    Result<json> announce(const std::string&, const json&) override { return unsupported(); }
    Result<json> vm_state(const std::string&) override { return unsupported(); }
    Result<CycleStart> begin_cycle(const std::string&, const json& begin) override {
        begin_ = begin;
        return CycleStart{begin.value("id", std::string("export")), false, ""};
    }
    Status put_chunk(const std::string&, const std::string&, std::uint64_t seq,
                     std::string body) override {
        auto file = dir_ / ("chunk-" + std::to_string(seq) + ".bin");
        if (auto s = write_file_atomically(file, body, 0600); !s) return s;
        return {};
    }
    Result<json> commit_cycle(const std::string&, const std::string&, const json& digest) override {
        json cycle = {{"vm", announcement_},
                      {"begin", begin_},
                      {"commit", digest},
                      {"primary_subject", subject_}};
        if (auto s = write_file_atomically(dir_ / "cycle.json", cycle.dump(1) + "\n", 0600); !s)
            return std::unexpected(s.error());
        return json{{"point",
                     {{"token", begin_.value("token", "")},
                      {"time", begin_.value("time", "")},
                      {"consistency", begin_.value("consistency", "")}}}};
    }
    Status abort_cycle(const std::string&, const std::string&) override {
        // A cut-off export leaves no cycle.json; its chunks are removed so the folder can be
        // used again.
        std::error_code ec;
        for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
            auto name = entry.path().filename().string();
            if (name.starts_with("chunk-") && name.ends_with(".bin"))
                std::filesystem::remove(entry.path(), ec);
        }
        return {};
    }
    Result<std::vector<BlockHash>> hashes(const std::string&, const std::string&, std::uint64_t,
                                          std::uint64_t, std::uint64_t) override {
        return fail(ErrorKind::unsupported, "an export compares no blocks");
    }
    Result<json> failover(const std::string&, const json&) override { return unsupported(); }
    Result<json> reverse(const std::string&, const json&) override { return unsupported(); }
    Result<json> remove(const std::string&) override { return unsupported(); }

  private:
    std::unexpected<Error> unsupported() const {
        return fail(ErrorKind::unsupported, peer_ + ": not a replica host");
    }
    std::filesystem::path dir_;
    std::string peer_;
    json announcement_;
    std::string subject_;
    json begin_;
};

}  // namespace

Result<std::unique_ptr<ReplicaClient>> folder_client(const std::filesystem::path& dir,
                                                     json announcement,
                                                     std::string primary_subject) {
    std::error_code ec;
    if (std::filesystem::exists(dir, ec)) {
        if (!std::filesystem::is_directory(dir, ec))
            return fail(ErrorKind::invalid_argument, dir.string() + " is not a folder");
        if (!std::filesystem::is_empty(dir, ec))
            return fail(ErrorKind::conflict,
                        dir.string() + " is not empty: export into a new or empty folder");
    } else {
        std::filesystem::create_directories(dir, ec);
        if (ec) return fail(ErrorKind::io, "cannot create " + dir.string() + ": " + ec.message());
        std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
    }
    return std::unique_ptr<ReplicaClient>(
        std::make_unique<FolderClient>(dir, std::move(announcement), std::move(primary_subject)));
}

}  // namespace vmshadow::replica
