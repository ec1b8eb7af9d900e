// SPDX-License-Identifier: MIT
#include "net/tls_identity.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <memory>
#include <system_error>

#include "common/atomic_file.h"
#include "common/os_error.h"
#include "common/private_file.h"
#include "net/pem_file.h"
#include "net/tls_util.h"

namespace vmshadow::net {

namespace {

using detail::bio_text;
using detail::BioPtr;
using detail::BnPtr;
using detail::ExtPtr;
using detail::PkeyPtr;
using detail::X509Ptr;

constexpr long ten_years_days = 3653;

// A host name fit for a DNS subjectAltName (the config syntax of X509V3_EXT_conf splits on
// ',' and ':'; a name with those is left to CN alone).
bool plain_host_name(const std::string& name) {
    if (name.empty() || name.size() > 253) return false;
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.';
        if (!ok) return false;
    }
    return true;
}

std::string host_name() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
    return name;
}

bool add_extension(X509* cert, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, const_cast<char*>(value)));
    return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

struct Generated {
    std::string certificate_pem;
    std::string key_pem;
};

Result<Generated> generate_identity() {
    auto failed = [](const char* what) {
        return fail(ErrorKind::internal,
                    std::string("make the TLS identity: ") + what + ": " + detail::openssl_error());
    };
    PkeyPtr key(EVP_EC_gen("P-256"));
    if (!key) return failed("generate an EC P-256 key");
    X509Ptr cert(X509_new());
    if (!cert || X509_set_version(cert.get(), 2) != 1) return failed("new certificate");
    BnPtr serial(BN_new());
    if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
        BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr)
        return failed("serial number");
    // An hour of slack before now: a client whose clock is a little behind still accepts it.
    if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
        X509_time_adj_ex(X509_getm_notAfter(cert.get()), ten_years_days, 0, nullptr) == nullptr)
        return failed("validity");
    std::string host = host_name();
    X509_NAME* name = X509_get_subject_name(cert.get());
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(host.c_str()), -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(cert.get(), name) != 1)
        return failed("subject");
    std::string san;
    if (plain_host_name(host) && host != "localhost") san = "DNS:" + host + ",";
    san += "DNS:localhost,IP:127.0.0.1,IP:::1";
    if (!add_extension(cert.get(), NID_subject_alt_name, san.c_str()) ||
        !add_extension(cert.get(), NID_basic_constraints, "critical,CA:FALSE") ||
        !add_extension(cert.get(), NID_subject_key_identifier, "hash"))
        return failed("extensions");
    if (X509_set_pubkey(cert.get(), key.get()) != 1 ||
        X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0)
        return failed("sign");

    BioPtr cert_bio(BIO_new(BIO_s_mem()));
    BioPtr key_bio(BIO_new(BIO_s_mem()));
    if (!cert_bio || !key_bio || PEM_write_bio_X509(cert_bio.get(), cert.get()) != 1 ||
        PEM_write_bio_PrivateKey(key_bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
            1)
        return failed("PEM");
    return Generated{bio_text(cert_bio.get()), bio_text(key_bio.get())};
}

Status create_identity(const TlsIdentity& identity) {
    auto made = generate_identity();
    if (!made) return fail(made.error());
    // The key first: a crash between the two leaves a key without a certificate, which the
    // next start reports (naming the file) instead of serving a certificate nobody can use.
    if (auto st = write_file_atomically(identity.key_file, made->key_pem, 0600); !st)
        return fail(st.error());
    if (auto st = write_file_atomically(identity.certificate_file, made->certificate_pem, 0644);
        !st) {
        std::error_code ec;
        std::filesystem::remove(identity.key_file, ec);
        return fail(st.error());
    }
    return {};
}

Status load_identity(const TlsIdentity& identity) {
    if (auto st = check_private_file(identity.key_file); !st) return fail(st.error());
    auto cert = detail::read_pem_certificate(identity.certificate_file);
    if (!cert) return fail(cert.error());
    auto key = detail::read_pem_key(identity.key_file);
    if (!key) return fail(key.error());
    if (X509_check_private_key(cert->get(), key->get()) != 1) {
        detail::openssl_error();
        return fail(ErrorKind::corruption,
                    identity.key_file.string() + " is not the key of " +
                        identity.certificate_file.string() +
                        ": restore the matching pair, or remove both to make a new one");
    }
    return {};
}

}  // namespace

Result<TlsIdentity> ensure_tls_identity(const std::filesystem::path& dir) {
    TlsIdentity identity;
    identity.certificate_file = dir / "api.crt";
    identity.key_file = dir / "api.key";
    std::error_code ec;
    bool have_cert = std::filesystem::exists(identity.certificate_file, ec);
    if (ec) return fail(os_error("stat " + identity.certificate_file.string(), ec));
    bool have_key = std::filesystem::exists(identity.key_file, ec);
    if (ec) return fail(os_error("stat " + identity.key_file.string(), ec));

    if (have_cert != have_key) {
        const auto& present = have_cert ? identity.certificate_file : identity.key_file;
        const auto& missing = have_cert ? identity.key_file : identity.certificate_file;
        return fail(ErrorKind::not_found, missing.string() + " is missing beside " +
                                              present.string() + ": restore it, or remove " +
                                              present.string() + " to make a new pair");
    }
    if (!have_cert) {
        if (auto st = create_identity(identity); !st)
            return fail(st.error().with_context("TLS identity in " + dir.string()));
        identity.created = true;
    } else if (auto st = load_identity(identity); !st) {
        return fail(st.error().with_context("TLS identity in " + dir.string()));
    }
    auto fingerprint = certificate_fingerprint(identity.certificate_file);
    if (!fingerprint) return fail(fingerprint.error());
    identity.sha256_fingerprint = *fingerprint;
    return identity;
}

Result<std::string> certificate_fingerprint(const std::filesystem::path& file) {
    auto cert = detail::read_pem_certificate(file);
    if (!cert) return fail(cert.error());
    std::string fingerprint = detail::sha256_fingerprint(cert->get());
    if (fingerprint.empty())
        return fail(ErrorKind::internal, file.string() + ": SHA-256 of the certificate failed");
    return fingerprint;
}

}  // namespace vmshadow::net
