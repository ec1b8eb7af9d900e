// SPDX-License-Identifier: MIT
#include "virt/qemu_img.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/process.h"

namespace vmshadow::virt {
namespace {

constexpr std::chrono::seconds kQemuImgTimeout{60};

// qemu-img to completion within kQemuImgTimeout (common/process.h's run_tool).
Result<std::string> run_qemu_img(const std::vector<std::string>& argv, const std::string& what) {
    return with_context(run_checked(argv, kQemuImgTimeout), what);
}

}  // namespace

Status create_qcow2(const std::string& path, std::uint64_t virtual_size) {
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
        return fail(ErrorKind::conflict, "scratch image " + path + " exists already");
    }
    auto done = run_qemu_img({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
                              "--", path, std::to_string(virtual_size)},
                             "create scratch image " + path);
    if (!done) return fail(done.error());
    return {};
}

Result<std::vector<ImageBitmap>> image_bitmaps(const std::string& path, bool force_share) {
    std::vector<std::string> argv = {"qemu-img", "info", "--output=json"};
    if (force_share) argv.push_back("-U");
    argv.push_back("--");
    argv.push_back(path);
    auto out = run_qemu_img(argv, "read bitmaps of " + path);
    if (!out) return fail(out.error());
    auto info = nlohmann::json::parse(*out, nullptr, false);
    if (info.is_discarded()) {
        return fail(ErrorKind::io, "read bitmaps of " + path + ": qemu-img printed no JSON");
    }
    std::vector<ImageBitmap> bitmaps;
    const auto& data = info.value("format-specific", nlohmann::json::object())
                           .value("data", nlohmann::json::object());
    for (const auto& b : data.value("bitmaps", nlohmann::json::array())) {
        ImageBitmap bitmap{b.value("name", ""), false, false};
        for (const auto& flag : b.value("flags", nlohmann::json::array())) {
            if (flag == "in-use") bitmap.in_use = true;
            if (flag == "auto") bitmap.auto_ = true;
        }
        bitmaps.push_back(std::move(bitmap));
    }
    return bitmaps;
}

Status remove_image_bitmap(const std::string& path, const std::string& bitmap) {
    auto done = run_qemu_img({"qemu-img", "bitmap", "--remove", "--", path, bitmap},
                             "remove bitmap '" + bitmap + "' from " + path);
    if (!done) return fail(done.error());
    return {};
}

Status add_merged_bitmap(const std::string& path, const std::string& bitmap,
                         const std::vector<std::string>& sources) {
    auto existing = image_bitmaps(path, false);
    if (!existing) return fail(existing.error());
    for (const auto& b : *existing)
        if (b.name == bitmap)
            return fail(ErrorKind::conflict, path + " has a bitmap '" + bitmap + "' already");
    // One qemu-img run: the operations apply in order, so the image is opened once.
    std::vector<std::string> argv{"qemu-img", "bitmap", "--add", "--disable"};
    for (const auto& s : sources) {
        argv.push_back("--merge");
        argv.push_back(s);
    }
    argv.push_back("--");
    argv.push_back(path);
    argv.push_back(bitmap);
    auto done = run_qemu_img(argv, "merge bitmaps into '" + bitmap + "' of " + path);
    if (!done) return fail(done.error());
    return {};
}

}  // namespace vmshadow::virt
