// SPDX-License-Identifier: MIT
#pragma once
// The host's TLS identity: the key and self-signed certificate the daemon serves HTTPS with,
// made on first start and kept (as Proxmox Backup Server does), and the fingerprint clients
// pin.
//
// This module is: ensure_tls_identity (load, or generate an EC P-256 key and a 10-year
// self-signed certificate naming the host — CN and subjectAltName DNS:<hostname>,
// DNS:localhost, IP:127.0.0.1, IP:::1 — written atomically, the key 0600), the SHA-256
// fingerprint of a certificate. The key is held to common/private_file.h's rule.
// It is not: a CA, certificate renewal, or ACME.
//
// Thread-safety: free functions.

#include <filesystem>
#include <string>

#include "common/error.h"

namespace vmshadow::net {

struct TlsIdentity {
    std::filesystem::path certificate_file;  // <dir>/api.crt
    std::filesystem::path key_file;          // <dir>/api.key
    std::string sha256_fingerprint;          // "AB:CD:...:EF" (32 bytes, upper-case hex)
    bool created = false;                    // made by this call
};

// Loads <dir>/api.crt and <dir>/api.key, or makes both when neither exists. One without the
// other, an unreadable or mismatched pair, or a key readable by group or others is an error
// naming the file and what to do.
Result<TlsIdentity> ensure_tls_identity(const std::filesystem::path& dir);

// SHA-256 fingerprint of the PEM certificate in `file`.
Result<std::string> certificate_fingerprint(const std::filesystem::path& file);

}  // namespace vmshadow::net
