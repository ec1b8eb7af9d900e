// SPDX-License-Identifier: MIT
// Placeholder until the lab fixture lands.
namespace vmshadow::lab {}
