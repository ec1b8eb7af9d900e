// SPDX-License-Identifier: MIT
#pragma once
// What the parts of Repository (repository.cpp, repository_records.cpp) share: the seal domains
// of commit records and annotations, and small helpers for their files.
//
// It is: internal to repo's Repository. It is not: an API for other modules (repository.h).
//
// Thread-safety: plain functions over what they are given.

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/error.h"
#include "repo/hash.h"
#include "repo/repository.h"

namespace vmshadow::repo {

inline constexpr std::string_view kCommitDomain = "commit";
inline constexpr std::string_view kAnnotationDomain = "annotation";

// A content-addressed file's name (a 64-digit hex id); other files in those folders are not ours.
bool is_hex_name(const std::string& name);

Result<nlohmann::json> parse_json(ByteView bytes, const std::string& what);

// Writes a content-addressed sealed file; returns its id.
Result<Hash256> write_sealed(const Repository& repo, std::string_view subdir, ByteView sealed);

}  // namespace vmshadow::repo
