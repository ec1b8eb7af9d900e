// SPDX-License-Identifier: MIT
#pragma once
// PEM files and OpenSSL handles, for net's TLS identity and its small CA (private to net).
//
// This module is: RAII for the OpenSSL objects those two make and read (BIO, X509, EVP_PKEY,
// BIGNUM, X509_EXTENSION, X509_STORE, X509_STORE_CTX), reading one PEM certificate or one
// unencrypted PEM private key from a file (a missing or unreadable file gets its
// os_error kind; a file that is not PEM is corruption naming it), and a memory BIO's text.
// It is not: the checks on a key file's mode (common/private_file.h, the callers').
//
// Thread-safety: free functions.
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <filesystem>
#include <memory>
#include <string>

#include "common/error.h"

namespace vmshadow::net::detail {

template <auto Free>
struct OpenSslFree {
    template <class T>
    void operator()(T* p) const {
        Free(p);
    }
};
using BioPtr = std::unique_ptr<BIO, OpenSslFree<BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, OpenSslFree<X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, OpenSslFree<EVP_PKEY_free>>;
using BnPtr = std::unique_ptr<BIGNUM, OpenSslFree<BN_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, OpenSslFree<X509_EXTENSION_free>>;
using StorePtr = std::unique_ptr<X509_STORE, OpenSslFree<X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OpenSslFree<X509_STORE_CTX_free>>;

Result<BioPtr> open_pem_for_reading(const std::filesystem::path& file);
Result<X509Ptr> read_pem_certificate(const std::filesystem::path& file);
Result<PkeyPtr> read_pem_key(const std::filesystem::path& file);
// The bytes written into a memory BIO so far.
std::string bio_text(BIO* bio);

}  // namespace vmshadow::net::detail
