// SPDX-License-Identifier: MIT
#pragma once
// Hash256: the 32-byte identifier of everything content-addressed in the repository
// (chunks, chunk-map blocks, packs, index files, restore points).
//
// This module is: a value type with hex conversion and a std::hash. It is not: the hashing
// itself (crypto.h computes ids; encrypted repositories key them so they reveal nothing).
// The all-zero value is reserved: in a chunk map it means "hole" (a zero range that costs
// nothing). Never change that meaning; it is on disk.
//
// Thread-safety: plain value.

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace vmshadow::repo {

struct Hash256 {
    std::array<std::uint8_t, 32> bytes{};

    bool is_zero() const {
        for (auto b : bytes)
            if (b != 0) return false;
        return true;
    }
    std::string hex() const;
    // The first 12 hex digits: what listings show.
    std::string short_hex() const { return hex().substr(0, 12); }
    static std::optional<Hash256> from_hex(std::string_view hex);

    friend bool operator==(const Hash256&, const Hash256&) = default;
    friend auto operator<=>(const Hash256&, const Hash256&) = default;
};

// The hole marker in chunk maps.
inline constexpr Hash256 kHoleId{};

struct Hash256Hasher {
    std::size_t operator()(const Hash256& h) const noexcept {
        std::size_t v;
        std::memcpy(&v, h.bytes.data(), sizeof v);  // ids are uniformly distributed already
        return v;
    }
};

}  // namespace vmshadow::repo
