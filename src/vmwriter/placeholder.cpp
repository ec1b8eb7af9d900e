// SPDX-License-Identifier: MIT
namespace vmshadow::vmwriter {}
