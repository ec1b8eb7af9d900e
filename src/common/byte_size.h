// SPDX-License-Identifier: MIT
#pragma once
// Human-readable byte sizes for messages ("2.0 GiB").

#include <cstdint>
#include <string>

namespace vmshadow {

std::string format_bytes(std::uint64_t bytes);

}  // namespace vmshadow
