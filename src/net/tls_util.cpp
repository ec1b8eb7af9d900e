// SPDX-License-Identifier: MIT
#include "net/tls_util.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <ctime>
#include <memory>

#include "common/time_format.h"

namespace vmshadow::net::detail {

namespace {
constexpr char hex_digits[] = "0123456789ABCDEF";
}

std::string sha256_fingerprint(x509_st* certificate) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (certificate == nullptr || X509_digest(certificate, EVP_sha256(), digest, &length) != 1)
        return {};
    std::string out;
    for (unsigned int i = 0; i < length; ++i) {
        if (i > 0) out.push_back(':');
        out.push_back(hex_digits[digest[i] >> 4]);
        out.push_back(hex_digits[digest[i] & 0x0f]);
    }
    return out;
}

std::optional<std::string> normalize_fingerprint(std::string_view text) {
    std::string hex;
    for (char c : text) {
        if (c == ':') continue;
        if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
        hex.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    }
    if (hex.size() != 64) return std::nullopt;
    std::string out;
    for (std::size_t i = 0; i < hex.size(); i += 2) {
        if (i > 0) out.push_back(':');
        out.append(hex, i, 2);
    }
    return out;
}

std::string openssl_error() {
    unsigned long code = ERR_get_error();
    ERR_clear_error();
    if (code == 0) return "unknown OpenSSL error";
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    return text;
}

std::string subject_text(x509_st* certificate) {
    if (certificate == nullptr) return {};
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    if (!bio ||
        X509_NAME_print_ex(bio.get(), X509_get_subject_name(certificate), 0, XN_FLAG_RFC2253) < 0)
        return {};
    char* data = nullptr;
    long size = BIO_get_mem_data(bio.get(), &data);
    return size > 0 ? std::string(data, static_cast<std::size_t>(size)) : std::string();
}

std::string asn1_time_text(const asn1_string_st* time) {
    std::tm tm{};
    if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) return {};
    return iso8601_utc(static_cast<std::int64_t>(::timegm(&tm)));
}

std::string san_text(x509_st* certificate) {
    std::string out;
    auto* names = static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(certificate, NID_subject_alt_name, nullptr, nullptr));
    if (names == nullptr) return out;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
        std::string entry;
        if (name->type == GEN_DNS) {
            const ASN1_STRING* dns = name->d.dNSName;
            entry = "DNS:" + std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                                         static_cast<std::size_t>(ASN1_STRING_length(dns)));
        } else if (name->type == GEN_IPADD) {
            const ASN1_OCTET_STRING* ip = name->d.iPAddress;
            int length = ASN1_STRING_length(ip);
            char text[INET6_ADDRSTRLEN] = {};
            if ((length == 4 || length == 16) &&
                ::inet_ntop(length == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(ip), text,
                            sizeof text) != nullptr)
                entry = std::string("IP:") + text;
        }
        if (entry.empty()) continue;
        if (!out.empty()) out += ", ";
        out += entry;
    }
    GENERAL_NAMES_free(names);
    return out;
}

std::string verify_failure_text(long code, x509_st* certificate) {
    std::string text = X509_verify_cert_error_string(code);
    if (certificate == nullptr) return text;
    switch (code) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return text + " (not after " + asn1_time_text(X509_get0_notAfter(certificate)) + ")";
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return text + " (not before " + asn1_time_text(X509_get0_notBefore(certificate)) + ")";
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH: {
            std::string names = san_text(certificate);
            return text + " (it names " + (names.empty() ? "no host" : names) + ")";
        }
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_CERT_SIGNATURE_FAILURE: {
            std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
            char* data = nullptr;
            long size = 0;
            if (bio && X509_NAME_print_ex(bio.get(), X509_get_issuer_name(certificate), 0,
                                          XN_FLAG_RFC2253) >= 0)
                size = BIO_get_mem_data(bio.get(), &data);
            if (size <= 0) return text;
            return text + " (issued by " + std::string(data, static_cast<std::size_t>(size)) +
                   ", not by a trusted CA)";
        }
        default:
            return text;
    }
}

namespace {
int verify_note_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}
}  // namespace

void attach_verify_note(ssl_st* ssl, VerifyNote* note) {
    SSL_set_ex_data(ssl, verify_note_index(), note);
}

int note_verify_result(int preverify_ok, x509_store_ctx_st* store) {
    if (preverify_ok == 1) return preverify_ok;
    auto* ssl =
        static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    auto* note = ssl != nullptr
                     ? static_cast<VerifyNote*>(SSL_get_ex_data(ssl, verify_note_index()))
                     : nullptr;
    if (note != nullptr && !note->failed) {
        note->failed = true;
        note->subject = subject_text(X509_STORE_CTX_get0_cert(store));
        note->reason = verify_failure_text(X509_STORE_CTX_get_error(store),
                                           X509_STORE_CTX_get_current_cert(store));
    }
    return preverify_ok;
}

}  // namespace vmshadow::net::detail
