// SPDX-License-Identifier: MIT
#pragma once
// Private to src/net: the OpenSSL bits the server, the client and tls_identity share — one
// fingerprint format, one way to read OpenSSL's error queue.

#include <optional>
#include <string>
#include <string_view>

struct x509_st;

namespace vmshadow::net::detail {

// "AB:CD:...:EF": SHA-256 of the DER certificate, upper-case hex pairs joined by ':'.
std::string sha256_fingerprint(x509_st* certificate);

// A fingerprint as a user writes it ("ab:cd..." or "ABCD...") in the form above; nullopt
// unless it is 32 bytes of hex.
std::optional<std::string> normalize_fingerprint(std::string_view text);

// The oldest error in OpenSSL's queue of this thread, as text, and the queue cleared.
std::string openssl_error();

}  // namespace vmshadow::net::detail
