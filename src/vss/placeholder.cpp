// SPDX-License-Identifier: MIT
// The vss layer is built in the live-backup work (issue 4); this file keeps the target non-empty.
namespace vmshadow::vss {}
