// SPDX-License-Identifier: MIT
#pragma once
// A small certificate authority for hosts without a PKI — `vmshadow cert` — so that two
// vmshadowd hosts can authenticate each other for Replica (mutual TLS), as Hyper-V Replica's
// certificate-based authentication does in a workgroup.
//
// This module is: making a CA (EC P-256 key, self-signed certificate with basicConstraints
// CA:TRUE and keyCertSign), issuing a host certificate signed by it (EC P-256 key, CN = the
// host name, subjectAltName DNS:/IP: entries, extendedKeyUsage serverAuth + clientAuth: one
// certificate serves both roles), reading a certificate's facts, and checking that a
// certificate chains to a CA and is valid now (the same check the TLS handshake makes, for
// `cert show --ca` and the daemon's start-up). Everything through OpenSSL's API (EVP, X509),
// never the `openssl` tool. Keys are written 0600 (common/private_file.h), certificates 0644,
// atomically; an existing file is never overwritten (conflict naming it).
// It is not: the TLS handshake (http_server.h, http_client.h), revocation lists, renewal.
//
// Files: a CA directory holds ca.crt and ca.key; a host directory holds host.crt, host.key
// and a copy of ca.crt (what the daemon's [replica] section points at).
//
// Thread-safety: free functions.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"

namespace vmshadow::net {

struct CertificateRequest {
    std::string common_name;       // "hostb.example" — also the first DNS name unless an IP
    std::vector<std::string> dns;  // extra subjectAltName DNS entries
    std::vector<std::string> ips;  // subjectAltName IP entries ("127.0.0.2", "::1")
    int days = 825;                // validity from now; 1..36500
    // Tests: shifts the validity window into the past (an expired certificate is made with
    // not_before_offset = -10 days, days = 1).
    std::chrono::seconds not_before_offset{0};
};

struct CertificateFacts {
    std::string subject;     // "CN=hostb" (RFC 2253 form, as the allow list compares it)
    std::string issuer;      // "CN=vmshadow CA example"
    std::string not_before;  // ISO 8601 UTC
    std::string not_after;   // ISO 8601 UTC
    std::string sha256;      // "AB:CD:..."
    std::vector<std::string> dns, ips;
    bool is_ca = false;
};

// Makes <dir>/ca.crt and <dir>/ca.key (dir created 0700 when missing).
Status create_certificate_authority(const std::filesystem::path& dir,
                                    const CertificateRequest& request);
// Makes <out>/host.crt, <out>/host.key and <out>/ca.crt, signed by the CA in `ca_dir`. An
// <out>/ca.crt that is already this CA's is kept; a validity past the CA's is refused.
Status issue_host_certificate(const std::filesystem::path& ca_dir, const std::filesystem::path& out,
                              const CertificateRequest& request);
Result<CertificateFacts> read_certificate(const std::filesystem::path& file);
// ok when `file` is signed by the CA in `ca_file` and valid now; otherwise permission with
// OpenSSL's reason and the certificate's subject ("certificate CN=hosta (host.crt): certificate
// has expired (not after 2026-11-30T10:00:00Z)").
Status verify_certificate(const std::filesystem::path& file, const std::filesystem::path& ca_file);

}  // namespace vmshadow::net
