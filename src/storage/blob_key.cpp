// SPDX-License-Identifier: MIT
#include "storage/blob_store.h"

namespace vmshadow::storage {

Status check_key(std::string_view key) {
    auto bad = [&](std::string_view why) -> Status {
        return std::unexpected(Error(ErrorKind::invalid_argument,
                                     "storage key '" + std::string(key) + "' " + std::string(why)));
    };
    if (key.empty()) return bad("is empty");
    if (key.size() > 1024) return bad("is longer than 1024 bytes");
    for (char c : key)
        if (c < 0x21 || c > 0x7e) return bad("has a character outside printable ASCII");
    std::size_t start = 0;
    while (start <= key.size()) {
        auto end = key.find('/', start);
        if (end == std::string_view::npos) end = key.size();
        auto segment = key.substr(start, end - start);
        if (segment.empty()) return bad("has an empty segment (a leading, trailing or double '/')");
        if (segment == "." || segment == "..") return bad("has a '.' or '..' segment");
        start = end + 1;
    }
    return {};
}

Status check_empty_read(BlobStore& store, std::string_view key, std::uint64_t offset) {
    auto info = store.stat(key);
    if (!info) return std::unexpected(info.error());
    if (offset > info->size)
        return std::unexpected(
            Error(ErrorKind::corruption, store.location() + ": " + std::string(key) +
                                             ": the range starts past the object's end"));
    return {};
}

}  // namespace vmshadow::storage
