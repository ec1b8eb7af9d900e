// SPDX-License-Identifier: MIT
// The repository layer is built in the repository work (issue 3); this keeps the target non-empty.
namespace vmshadow::repo {}
