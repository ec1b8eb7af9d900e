// SPDX-License-Identifier: MIT
#include "net/pem_file.h"

#include <openssl/pem.h>
#include <unistd.h>

#include <cerrno>

#include "common/os_error.h"
#include "net/tls_util.h"

namespace vmshadow::net::detail {

Result<BioPtr> open_pem_for_reading(const std::filesystem::path& file) {
    // BIO_new_file's failure says little; a plain access() first gives a missing or
    // unreadable file its usual kind.
    if (::access(file.c_str(), R_OK) != 0) return fail(os_error("read " + file.string(), errno));
    BioPtr bio(BIO_new_file(file.c_str(), "r"));
    if (!bio) return fail(ErrorKind::io, "read " + file.string() + ": " + openssl_error());
    return bio;
}

Result<X509Ptr> read_pem_certificate(const std::filesystem::path& file) {
    auto bio = open_pem_for_reading(file);
    if (!bio) return fail(bio.error());
    X509Ptr cert(PEM_read_bio_X509(bio->get(), nullptr, nullptr, nullptr));
    if (!cert)
        return fail(ErrorKind::corruption,
                    file.string() + ": not a PEM certificate (" + openssl_error() + ")");
    return cert;
}

Result<PkeyPtr> read_pem_key(const std::filesystem::path& file) {
    auto bio = open_pem_for_reading(file);
    if (!bio) return fail(bio.error());
    PkeyPtr key(PEM_read_bio_PrivateKey(bio->get(), nullptr, nullptr, nullptr));
    if (!key)
        return fail(
            ErrorKind::corruption,
            file.string() + ": not an unencrypted PEM private key (" + openssl_error() + ")");
    return key;
}

std::string bio_text(BIO* bio) {
    char* data = nullptr;
    long size = BIO_get_mem_data(bio, &data);
    return size > 0 ? std::string(data, static_cast<std::size_t>(size)) : std::string();
}

}  // namespace vmshadow::net::detail
