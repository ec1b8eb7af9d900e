// SPDX-License-Identifier: MIT
#pragma once
// Enum <-> text, from one table per enum: names written to files and printed, parsed back.
//
//   constexpr auto kColours = enum_names<Colour>({{Colour::red, "red"}, ...}, "unknown");
//   kColours.name(Colour::red) == "red";  kColours.parse("red") == Colour::red;

#include <array>
#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

namespace vmshadow {

template <typename E, std::size_t N>
class EnumNames {
  public:
    using Entry = std::pair<E, std::string_view>;

    constexpr EnumNames(const Entry (&entries)[N], std::string_view unknown) : unknown_(unknown) {
        for (std::size_t i = 0; i < N; ++i) entries_[i] = entries[i];
    }

    // The value's name; `unknown` for a value the table lacks (a corrupt cast).
    constexpr std::string_view name(E value) const {
        for (const auto& [v, n] : entries_)
            if (v == value) return n;
        return unknown_;
    }
    // The value of that name; nullopt for any other text (`unknown` included).
    constexpr std::optional<E> parse(std::string_view name) const {
        for (const auto& [v, n] : entries_)
            if (n == name) return v;
        return std::nullopt;
    }
    constexpr const std::array<Entry, N>& entries() const { return entries_; }

  private:
    std::array<Entry, N> entries_{};
    std::string_view unknown_;
};

// The table's size is counted from the list: enum_names<E>({{E::a, "a"}, {E::b, "b"}}).
template <typename E, std::size_t N>
constexpr EnumNames<E, N> enum_names(const std::pair<E, std::string_view> (&entries)[N],
                                     std::string_view unknown = "unknown") {
    return EnumNames<E, N>(entries, unknown);
}

}  // namespace vmshadow
