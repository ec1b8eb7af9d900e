// SPDX-License-Identifier: MIT
#include "replica/replica_layers.h"

#include <chrono>
#include <nlohmann/json.hpp>

#include "common/process.h"

namespace vmshadow::replica::detail {
namespace {

// A commit copies up to a whole cycle's changes; creating and rebasing touch only metadata.
constexpr std::chrono::minutes kCommitTimeout{60};
constexpr std::chrono::seconds kQemuImgTimeout{60};

Status run_qemu_img(const std::vector<std::string>& argv, const std::string& what,
                    std::chrono::milliseconds timeout = kQemuImgTimeout) {
    auto done = run_checked(argv, timeout);
    if (!done) return fail(done.error().with_context(what));
    return {};
}

}  // namespace

Status create_base_layer(const std::filesystem::path& file, std::uint64_t size) {
    return run_qemu_img({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
                         "--", file.string(), std::to_string(size)},
                        "create replica layer " + file.string());
}

Status create_overlay(const std::filesystem::path& file, const std::string& backing,
                      const std::string& backing_format) {
    return run_qemu_img({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
                         "-b", backing, "-F", backing_format, "--", file.string()},
                        "create replica overlay " + file.string() + " above " + backing);
}

Status commit_into_backing(const std::filesystem::path& file) {
    return run_qemu_img({"qemu-img", "commit", "-q", "-d", "--", file.string()},
                        "merge replica layer " + file.string() + " into its backing file",
                        kCommitTimeout);
}

Status rebase_unsafe(const std::filesystem::path& file, const std::string& backing) {
    return run_qemu_img(
        {"qemu-img", "rebase", "-q", "-u", "-b", backing, "-F", "qcow2", "--", file.string()},
        "rebase replica layer " + file.string() + " onto " + backing);
}

Result<ImageInfo> image_info(const std::filesystem::path& file) {
    auto out =
        run_checked({"qemu-img", "info", "--output=json", "--", file.string()}, kQemuImgTimeout);
    if (!out) return fail(out.error().with_context("read image " + file.string()));
    auto j = nlohmann::json::parse(*out, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("format") || !j["format"].is_string() ||
        !j.contains("virtual-size") || !j["virtual-size"].is_number_unsigned())
        return fail(ErrorKind::invalid_argument,
                    "qemu-img info gave no format or size for " + file.string());
    return ImageInfo{j["format"].get<std::string>(), j["virtual-size"].get<std::uint64_t>()};
}

}  // namespace vmshadow::replica::detail
