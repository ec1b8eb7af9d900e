// SPDX-License-Identifier: MIT
#include "net/cert_authority.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
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
using detail::StoreCtxPtr;
using detail::StorePtr;
using detail::X509Ptr;

constexpr int kMaxDays = 36500;
// A peer whose clock is a little behind still accepts a certificate made just now.
constexpr long kClockSlackSeconds = 3600;

// ---- input checks ----------------------------------------------------------------------

bool is_ip(const std::string& text) {
    unsigned char buffer[16];
    return ::inet_pton(AF_INET, text.c_str(), buffer) == 1 ||
           ::inet_pton(AF_INET6, text.c_str(), buffer) == 1;
}

// A DNS name of letters, digits, '-' and '.' (what a subjectAltName DNS entry may carry and
// what X509_check_host compares).
bool is_host_name(const std::string& name) {
    if (name.empty() || name.size() > 253 || name.front() == '.' || name.front() == '-' ||
        name.back() == '.' || name.find("..") != std::string::npos)
        return false;
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.';
        if (!ok) return false;
    }
    return true;
}

// A CA's name may also hold spaces and '_' ("vmshadow CA lab_1"); nothing RFC 2253 escapes,
// so the subject reads back as it was written.
bool is_ca_name(const std::string& name) {
    if (name.empty() || name.size() > 64 || name.front() == ' ' || name.back() == ' ') return false;
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_' || c == ' ';
        if (!ok) return false;
    }
    return true;
}

Status check_request(const CertificateRequest& request, bool ca) {
    const std::string& cn = request.common_name;
    if (ca ? !is_ca_name(cn) : (cn.size() > 64 || !(is_host_name(cn) || is_ip(cn))))
        return fail(ErrorKind::invalid_argument,
                    "name '" + cn + "': " +
                        (ca ? "use 1 to 64 letters, digits, spaces, '-', '.' or '_'"
                            : "use a host name (letters, digits, '-', '.'; at most 64) or an IP "
                              "address"));
    if (request.days < 1 || request.days > kMaxDays)
        return fail(ErrorKind::invalid_argument, "validity of " + std::to_string(request.days) +
                                                     " days: must be from 1 to " +
                                                     std::to_string(kMaxDays));
    for (const auto& dns : request.dns)
        if (!is_host_name(dns))
            return fail(ErrorKind::invalid_argument,
                        "DNS name '" + dns + "': use letters, digits, '-' and '.'");
    for (const auto& ip : request.ips)
        if (!is_ip(ip))
            return fail(ErrorKind::invalid_argument,
                        "IP address '" + ip + "': not an IPv4 or IPv6 address");
    return {};
}

// ---- files -------------------------------------------------------------------------------

Result<bool> file_exists(const std::filesystem::path& file) {
    std::error_code ec;
    bool found = std::filesystem::exists(std::filesystem::symlink_status(file, ec));
    if (ec && ec != std::errc::no_such_file_or_directory)
        return fail(os_error("stat " + file.string(), ec));
    return found;
}

Status refuse_existing(const std::filesystem::path& file) {
    auto found = file_exists(file);
    if (!found) return fail(found.error());
    if (*found)
        return fail(ErrorKind::conflict, file.string() +
                                             " already exists: it is never overwritten; move "
                                             "it away or choose another directory");
    return {};
}

Status ensure_directory(const std::filesystem::path& dir) {
    std::error_code ec;
    if (std::filesystem::is_directory(dir, ec)) return {};
    if (std::filesystem::exists(dir, ec))
        return fail(ErrorKind::conflict, dir.string() + " exists and is not a directory");
    if (!dir.parent_path().empty()) {
        std::filesystem::create_directories(dir.parent_path(), ec);
        if (ec) return fail(os_error("create " + dir.parent_path().string(), ec));
    }
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        return fail(os_error("create " + dir.string(), errno));
    return {};
}

Result<std::string> read_text(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return fail(os_error("read " + file.string(), errno));
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

Result<PkeyPtr> load_key(const std::filesystem::path& file) {
    if (auto st = check_private_file(file); !st) return fail(st.error());
    return detail::read_pem_key(file);
}

// ---- making certificates -------------------------------------------------------------------

Error openssl_failure(const std::string& what) {
    return Error(ErrorKind::internal, what + ": " + detail::openssl_error());
}

// `issuer` null: self-signed (the extensions' issuer is the certificate itself).
bool add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : cert, cert, nullptr, nullptr, 0);
    ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
    return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

std::string subject_alt_names(const CertificateRequest& request) {
    std::string san;
    auto add = [&](const std::string& entry) {
        if (san.find(entry) != std::string::npos) return;
        if (!san.empty()) san += ",";
        san += entry;
    };
    add((is_ip(request.common_name) ? "IP:" : "DNS:") + request.common_name);
    for (const auto& dns : request.dns) add("DNS:" + dns);
    for (const auto& ip : request.ips) add("IP:" + ip);
    return san;
}

// A certificate for `key` named by the request, valid as it asks, not yet signed or extended.
Result<X509Ptr> new_certificate(const CertificateRequest& request, EVP_PKEY* key) {
    X509Ptr cert(X509_new());
    if (!cert || X509_set_version(cert.get(), 2) != 1)
        return fail(openssl_failure("new certificate"));
    // 159 random bits: unique without a serial file, positive, within RFC 5280's 20 bytes.
    BnPtr serial(BN_new());
    if (!serial || BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
        BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr)
        return fail(openssl_failure("serial number"));
    long offset = static_cast<long>(request.not_before_offset.count());
    if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), offset - kClockSlackSeconds) == nullptr ||
        X509_time_adj_ex(X509_getm_notAfter(cert.get()), request.days, offset, nullptr) == nullptr)
        return fail(openssl_failure("validity"));
    X509_NAME* name = X509_get_subject_name(cert.get());
    if (X509_NAME_add_entry_by_txt(
            name, "CN", MBSTRING_UTF8,
            reinterpret_cast<const unsigned char*>(request.common_name.c_str()), -1, -1, 0) != 1)
        return fail(openssl_failure("subject"));
    if (X509_set_pubkey(cert.get(), key) != 1) return fail(openssl_failure("public key"));
    return cert;
}

struct Pem {
    std::string certificate;
    std::string key;
};

Result<Pem> to_pem(X509* cert, EVP_PKEY* key) {
    BioPtr cert_bio(BIO_new(BIO_s_mem()));
    BioPtr key_bio(BIO_new(BIO_s_mem()));
    if (!cert_bio || !key_bio || PEM_write_bio_X509(cert_bio.get(), cert) != 1 ||
        PEM_write_bio_PrivateKey(key_bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
        return fail(openssl_failure("PEM"));
    return Pem{bio_text(cert_bio.get()), bio_text(key_bio.get())};
}

// The key first, 0600: a crash between the two leaves a key without a certificate (named by
// the next attempt) rather than a certificate whose key is lost.
Status write_pair(const std::filesystem::path& cert_file, const std::filesystem::path& key_file,
                  const Pem& pem) {
    if (auto st = write_file_atomically(key_file, pem.key, 0600); !st) return fail(st.error());
    if (auto st = write_file_atomically(cert_file, pem.certificate, 0644); !st) {
        std::error_code ec;
        std::filesystem::remove(key_file, ec);
        return fail(st.error());
    }
    return {};
}

Result<Pem> make_ca(const CertificateRequest& request) {
    PkeyPtr key(EVP_EC_gen("P-256"));
    if (!key) return fail(openssl_failure("generate an EC P-256 key"));
    auto cert = new_certificate(request, key.get());
    if (!cert) return fail(cert.error());
    X509* c = cert->get();
    if (X509_set_issuer_name(c, X509_get_subject_name(c)) != 1)
        return fail(openssl_failure("issuer"));
    // The subject key identifier first: the authority key identifier copies it.
    if (!add_extension(c, nullptr, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
        !add_extension(c, nullptr, NID_key_usage, "critical,keyCertSign,cRLSign") ||
        !add_extension(c, nullptr, NID_subject_key_identifier, "hash") ||
        !add_extension(c, nullptr, NID_authority_key_identifier, "keyid:always"))
        return fail(openssl_failure("CA extensions"));
    if (X509_sign(c, key.get(), EVP_sha256()) <= 0) return fail(openssl_failure("sign"));
    return to_pem(c, key.get());
}

Result<Pem> make_host(const CertificateRequest& request, X509* ca, EVP_PKEY* ca_key) {
    PkeyPtr key(EVP_EC_gen("P-256"));
    if (!key) return fail(openssl_failure("generate an EC P-256 key"));
    auto cert = new_certificate(request, key.get());
    if (!cert) return fail(cert.error());
    X509* c = cert->get();
    if (X509_set_issuer_name(c, X509_get_subject_name(ca)) != 1)
        return fail(openssl_failure("issuer"));
    if (!add_extension(c, ca, NID_basic_constraints, "critical,CA:FALSE") ||
        !add_extension(c, ca, NID_key_usage, "critical,digitalSignature,keyAgreement") ||
        !add_extension(c, ca, NID_ext_key_usage, "serverAuth,clientAuth") ||
        !add_extension(c, ca, NID_subject_alt_name, subject_alt_names(request)) ||
        !add_extension(c, ca, NID_subject_key_identifier, "hash") ||
        !add_extension(c, ca, NID_authority_key_identifier, "keyid:always"))
        return fail(openssl_failure("host extensions"));
    if (X509_sign(c, ca_key, EVP_sha256()) <= 0) return fail(openssl_failure("sign"));
    return to_pem(c, key.get());
}

struct LoadedCa {
    X509Ptr cert;
    PkeyPtr key;
    std::string pem;
};

Result<LoadedCa> load_ca(const std::filesystem::path& dir) {
    auto cert_file = dir / "ca.crt";
    auto key_file = dir / "ca.key";
    LoadedCa ca;
    auto cert = detail::read_pem_certificate(cert_file);
    if (!cert) return fail(cert.error());
    ca.cert = std::move(*cert);
    auto key = load_key(key_file);
    if (!key) return fail(key.error());
    ca.key = std::move(*key);
    if ((X509_get_extension_flags(ca.cert.get()) & EXFLAG_CA) == 0)
        return fail(
            ErrorKind::invalid_argument,
            cert_file.string() + " is not a CA certificate (make one with `vmshadow cert ca`)");
    if (X509_check_private_key(ca.cert.get(), ca.key.get()) != 1) {
        detail::openssl_error();
        return fail(ErrorKind::corruption,
                    key_file.string() + " is not the key of " + cert_file.string());
    }
    auto pem = read_text(cert_file);
    if (!pem) return fail(pem.error());
    ca.pem = std::move(*pem);
    return ca;
}

}  // namespace

Status create_certificate_authority(const std::filesystem::path& dir,
                                    const CertificateRequest& request) {
    if (auto st = check_request(request, true); !st) return st;
    if (!request.dns.empty() || !request.ips.empty())
        return fail(ErrorKind::invalid_argument, "a CA certificate names no DNS names or IPs");
    auto cert_file = dir / "ca.crt";
    auto key_file = dir / "ca.key";
    for (const auto& file : {cert_file, key_file})
        if (auto st = refuse_existing(file); !st) return st;
    if (auto st = ensure_directory(dir); !st) return st;
    auto pem = make_ca(request);
    if (!pem) return fail(pem.error().with_context("make the CA in " + dir.string()));
    return write_pair(cert_file, key_file, *pem);
}

Status issue_host_certificate(const std::filesystem::path& ca_dir, const std::filesystem::path& out,
                              const CertificateRequest& request) {
    if (auto st = check_request(request, false); !st) return st;
    auto ca = load_ca(ca_dir);
    if (!ca) return fail(ca.error().with_context("the CA in " + ca_dir.string()));
    auto cert_file = out / "host.crt";
    auto key_file = out / "host.key";
    auto ca_copy = out / "ca.crt";
    for (const auto& file : {cert_file, key_file})
        if (auto st = refuse_existing(file); !st) return st;
    // The CA's own certificate may already be there (issuing into the CA's directory, or a
    // second run after a removed pair): kept when it is the same one, never replaced.
    auto have_ca_copy = file_exists(ca_copy);
    if (!have_ca_copy) return fail(have_ca_copy.error());
    if (*have_ca_copy) {
        auto present = read_text(ca_copy);
        if (!present) return fail(present.error());
        if (*present != ca->pem)
            return fail(ErrorKind::conflict, ca_copy.string() +
                                                 " already exists and is another CA's "
                                                 "certificate: it is never overwritten; move it "
                                                 "away or choose another directory");
    }
    // A certificate outliving its CA would stop verifying when the CA expires, unannounced.
    std::time_t until = std::time(nullptr) + static_cast<std::time_t>(request.days) * 86400 +
                        static_cast<std::time_t>(request.not_before_offset.count());
    if (X509_cmp_time(X509_get0_notAfter(ca->cert.get()), &until) < 0)
        return fail(ErrorKind::invalid_argument,
                    "validity of " + std::to_string(request.days) + " days outlives the CA " +
                        (ca_dir / "ca.crt").string() + " (not after " +
                        detail::asn1_time_text(X509_get0_notAfter(ca->cert.get())) +
                        "): ask for fewer days");
    if (auto st = ensure_directory(out); !st) return st;
    auto pem = make_host(request, ca->cert.get(), ca->key.get());
    if (!pem) return fail(pem.error().with_context("issue " + cert_file.string()));
    if (!*have_ca_copy)
        if (auto st = write_file_atomically(ca_copy, ca->pem, 0644); !st) return st;
    return write_pair(cert_file, key_file, *pem);
}

Result<CertificateFacts> read_certificate(const std::filesystem::path& file) {
    auto cert = detail::read_pem_certificate(file);
    if (!cert) return fail(cert.error());
    X509* c = cert->get();
    CertificateFacts facts;
    facts.subject = detail::subject_text(c);
    {
        BioPtr bio(BIO_new(BIO_s_mem()));
        if (bio && X509_NAME_print_ex(bio.get(), X509_get_issuer_name(c), 0, XN_FLAG_RFC2253) >= 0)
            facts.issuer = bio_text(bio.get());
    }
    facts.not_before = detail::asn1_time_text(X509_get0_notBefore(c));
    facts.not_after = detail::asn1_time_text(X509_get0_notAfter(c));
    facts.sha256 = detail::sha256_fingerprint(c);
    std::string names = detail::san_text(c);
    for (std::size_t start = 0; start < names.size();) {
        auto end = names.find(", ", start);
        std::string entry = names.substr(start, end == std::string::npos ? end : end - start);
        if (entry.rfind("DNS:", 0) == 0) facts.dns.push_back(entry.substr(4));
        if (entry.rfind("IP:", 0) == 0) facts.ips.push_back(entry.substr(3));
        if (end == std::string::npos) break;
        start = end + 2;
    }
    facts.is_ca = (X509_get_extension_flags(c) & EXFLAG_CA) != 0;
    return facts;
}

Status verify_certificate(const std::filesystem::path& file, const std::filesystem::path& ca_file) {
    auto cert = detail::read_pem_certificate(file);
    if (!cert) return fail(cert.error());
    auto ca = detail::read_pem_certificate(ca_file);
    if (!ca) return fail(ca.error());
    if ((X509_get_extension_flags(ca->get()) & EXFLAG_CA) == 0)
        return fail(ErrorKind::invalid_argument, ca_file.string() + " is not a CA certificate");
    StorePtr store(X509_STORE_new());
    StoreCtxPtr ctx(X509_STORE_CTX_new());
    if (!store || !ctx || X509_STORE_add_cert(store.get(), ca->get()) != 1 ||
        X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr) != 1)
        return fail(openssl_failure("verify " + file.string()));
    if (X509_verify_cert(ctx.get()) == 1) return {};
    detail::openssl_error();  // the reason is the context's, not the queue's
    int code = X509_STORE_CTX_get_error(ctx.get());
    return fail(ErrorKind::permission,
                "certificate " + detail::subject_text(cert->get()) + " (" + file.string() + "): " +
                    detail::verify_failure_text(code, X509_STORE_CTX_get_current_cert(ctx.get())));
}

}  // namespace vmshadow::net
