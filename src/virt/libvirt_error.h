// SPDX-License-Identifier: MIT
#pragma once
// Turns libvirt's thread-local last error into a one-line vmshadow Error whose kind follows
// the libvirt error code (no domain → not_found, agent unresponsive → unavailable, ...).
// Call it right after the failing libvirt call, on the same thread.

#include <string_view>

#include "common/error.h"

namespace vmshadow::virt {

// `what` names the operation and its object, e.g. "vm 'web1': freeze filesystems".
Error libvirt_error(std::string_view what);

// Stops libvirt from printing its errors to stderr itself; vmshadow reports them once.
// Safe to call more than once.
void silence_libvirt_default_error_printing();

}  // namespace vmshadow::virt
