// SPDX-License-Identifier: MIT
namespace vmshadow::engine {}
