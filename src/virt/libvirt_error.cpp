// SPDX-License-Identifier: MIT
#include "virt/libvirt_error.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <string>

namespace vmshadow::virt {
namespace {

ErrorKind kind_for(int code) {
    switch (code) {
        case VIR_ERR_NO_DOMAIN:
        case VIR_ERR_NO_DOMAIN_CHECKPOINT:
        case VIR_ERR_NO_DOMAIN_SNAPSHOT:
        case VIR_ERR_NO_NETWORK:
        case VIR_ERR_NO_STORAGE_VOL:
        case VIR_ERR_NO_DOMAIN_BACKUP:
            return ErrorKind::not_found;
        case VIR_ERR_AGENT_UNRESPONSIVE:
        case VIR_ERR_AGENT_UNSYNCED:
        case VIR_ERR_NO_CONNECT:
        case VIR_ERR_SYSTEM_ERROR:
        case VIR_ERR_RPC:
        case VIR_ERR_AUTH_UNAVAILABLE:
            return ErrorKind::unavailable;
        case VIR_ERR_OPERATION_TIMEOUT:
            return ErrorKind::timeout;
        case VIR_ERR_OPERATION_INVALID:
        case VIR_ERR_DOM_EXIST:
        case VIR_ERR_OPERATION_FAILED:
            return ErrorKind::conflict;
        case VIR_ERR_OPERATION_UNSUPPORTED:
        case VIR_ERR_NO_SUPPORT:
        case VIR_ERR_ARGUMENT_UNSUPPORTED:
        case VIR_ERR_CONFIG_UNSUPPORTED:
            return ErrorKind::unsupported;
        case VIR_ERR_AUTH_FAILED:
        case VIR_ERR_AUTH_CANCELLED:
        case VIR_ERR_OPERATION_DENIED:
        case VIR_ERR_ACCESS_DENIED:
            return ErrorKind::permission;
        case VIR_ERR_INVALID_ARG:
        case VIR_ERR_XML_ERROR:
        case VIR_ERR_XML_DETAIL:
            return ErrorKind::invalid_argument;
        default:
            return ErrorKind::internal;
    }
}

void ignore_error(void*, virErrorPtr) {}

}  // namespace

Error libvirt_error(std::string_view what) {
    virErrorPtr err = virGetLastError();
    std::string message(what);
    if (err == nullptr || err->message == nullptr) {
        message += ": libvirt failed without saying why";
        return Error(ErrorKind::internal, message);
    }
    message += ": ";
    message += err->message;
    // libvirt messages are one line almost always; keep ours one line always.
    for (char& c : message) {
        if (c == '\n') c = ' ';
    }
    return Error(kind_for(err->code), message);
}

void silence_libvirt_default_error_printing() {
    virSetErrorFunc(nullptr, ignore_error);
}

}  // namespace vmshadow::virt
