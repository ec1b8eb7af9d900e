// SPDX-License-Identifier: MIT
#pragma once
// Private to src/net: the OpenSSL bits the server, the client and tls_identity share — one
// fingerprint format, one way to read OpenSSL's error queue.

#include <optional>
#include <string>
#include <string_view>

struct x509_st;
struct asn1_string_st;
struct x509_store_ctx_st;
struct ssl_st;

namespace vmshadow::net::detail {

// "AB:CD:...:EF": SHA-256 of the DER certificate, upper-case hex pairs joined by ':'.
std::string sha256_fingerprint(x509_st* certificate);

// A fingerprint as a user writes it ("ab:cd..." or "ABCD...") in the form above; nullopt
// unless it is 32 bytes of hex.
std::optional<std::string> normalize_fingerprint(std::string_view text);

// The oldest error in OpenSSL's queue of this thread, as text, and the queue cleared.
std::string openssl_error();

// The certificate's subject in RFC 2253 form ("CN=hosta"), as allow lists compare it.
std::string subject_text(x509_st* certificate);
// "2026-11-30T10:00:00Z"; "" when the time cannot be read.
std::string asn1_time_text(const asn1_string_st* time);
// The subjectAltName entries: "DNS:hostb", "IP:127.0.0.2".
std::string san_text(x509_st* certificate);

// Why verification failed, as a person needs it: OpenSSL's reason plus the fact behind it
// ("certificate has expired (not after 2026-11-30T10:00:00Z)", "hostname mismatch (it names
// DNS:hostb, IP:127.0.0.2)"). `certificate` is the one the error is about (may be null).
std::string verify_failure_text(long code, x509_st* certificate);

// OpenSSL forgets the peer's certificate when its verification fails the handshake, so a
// verify callback notes the first failure here for the error message or log line.
struct VerifyNote {
    bool failed = false;
    std::string subject;  // the peer's (leaf) certificate
    std::string reason;   // verify_failure_text of the first failure
};
// Makes `note` the one `ssl`'s verify callback fills (the caller keeps it alive).
void attach_verify_note(ssl_st* ssl, VerifyNote* note);
// The verify callback (SSL_CTX_set_verify): records into the attached note, changes nothing.
int note_verify_result(int preverify_ok, x509_store_ctx_st* store);

}  // namespace vmshadow::net::detail
