// SPDX-License-Identifier: MIT
#pragma once
// The replica store's qemu-img operations on its layer files (private to the replica layer):
// create a base or an overlay, commit a layer into its backing file, rebase a layer without
// touching its data. qcow2 is handled only by qemu-img (common/process.h's run_checked, each
// call bounded in time); errors name the file and carry qemu-img's last words.
//
// Thread-safety: free functions.
#include <cstdint>
#include <filesystem>
#include <string>

#include "common/error.h"

namespace vmshadow::replica::detail {

// A new qcow2 image without a backing file (64 KiB clusters).
Status create_base_layer(const std::filesystem::path& file, std::uint64_t size);
// A new qcow2 overlay of `file` above `backing`: a name relative to file's folder, or an
// absolute path, of format `backing_format`.
Status create_overlay(const std::filesystem::path& file, const std::string& backing,
                      const std::string& backing_format);
// Copies what `file` holds into its backing file (qemu-img commit -d: `file` stays as it was).
Status commit_into_backing(const std::filesystem::path& file);
// Makes `file`'s backing file `backing` (qcow2) without copying data (qemu-img rebase -u):
// only right when `backing` reads the same as the old backing file.
Status rebase_unsafe(const std::filesystem::path& file, const std::string& backing);
struct ImageInfo {
    std::string format;  // "raw", "qcow2", ...
    std::uint64_t virtual_size = 0;
};
// What qemu-img detects for an image.
Result<ImageInfo> image_info(const std::filesystem::path& file);

}  // namespace vmshadow::replica::detail
