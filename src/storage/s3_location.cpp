// SPDX-License-Identifier: MIT
// The S3 location string and the credentials: what the user types, checked before any request.
#include <cstdlib>
#include <filesystem>
#include <toml.hpp>

#include "common/private_file.h"
#include "storage/s3_blob_store.h"

namespace vmshadow::storage {
namespace {

std::unexpected<Error> bad_location(std::string_view spec, const std::string& why) {
    return fail(ErrorKind::invalid_argument,
                "S3 location '" + std::string(spec) + "': " + why +
                    " (expected s3:https://HOST[:PORT]/BUCKET[/PREFIX])");
}

bool is_loopback_host(std::string_view host) {
    return host == "localhost" || host.starts_with("127.") || host == "[::1]";
}

// S3's bucket naming rules (3-63 of a-z 0-9 . -, starting and ending with a letter or digit).
bool valid_bucket(std::string_view bucket) {
    if (bucket.size() < 3 || bucket.size() > 63) return false;
    for (char c : bucket)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-'))
            return false;
    auto edge = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    return edge(bucket.front()) && edge(bucket.back());
}

}  // namespace

std::string S3Location::text() const {
    return "s3:" + endpoint + "/" + bucket + (prefix.empty() ? "" : "/" + prefix);
}

bool is_s3_location(std::string_view spec) {
    return spec.starts_with("s3:");
}

Result<S3Location> parse_s3_location(std::string_view spec) {
    if (!is_s3_location(spec)) return bad_location(spec, "does not start with s3:");
    auto rest = spec.substr(3);
    std::string_view scheme;
    if (rest.starts_with("https://"))
        scheme = "https://";
    else if (rest.starts_with("http://"))
        scheme = "http://";
    else
        return bad_location(spec, "needs https:// after s3:");
    rest.remove_prefix(scheme.size());
    auto slash = rest.find('/');
    if (slash == std::string_view::npos) return bad_location(spec, "names no bucket");
    auto authority = rest.substr(0, slash);
    auto path = rest.substr(slash + 1);
    if (authority.empty()) return bad_location(spec, "names no host");
    for (char c : authority)
        if (c < 0x21 || c > 0x7e || c == '@' || c == '?' || c == '#')
            return bad_location(spec, "has a malformed host");
    auto colon = authority.rfind(':');
    std::string_view host = authority;
    if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos) {
        host = authority.substr(0, colon);
        auto port = authority.substr(colon + 1);
        if (port.empty() || port.size() > 5 ||
            port.find_first_not_of("0123456789") != std::string_view::npos ||
            std::stoi(std::string(port)) > 65535 || std::stoi(std::string(port)) == 0)
            return bad_location(spec, "has a malformed port");
    }
    if (host.empty()) return bad_location(spec, "names no host");
    if (scheme == "http://" && !is_loopback_host(host))
        return bad_location(spec, "uses http:// to a host that is not loopback; use https://");
    while (path.ends_with('/')) path.remove_suffix(1);
    auto bucket_end = path.find('/');
    S3Location location;
    location.endpoint = std::string(scheme) + std::string(authority);
    location.bucket = std::string(path.substr(0, bucket_end));
    if (!valid_bucket(location.bucket))
        return bad_location(spec, "bucket '" + location.bucket +
                                      "' is not a valid S3 bucket name (3-63 of a-z 0-9 . -)");
    if (bucket_end != std::string_view::npos) {
        location.prefix = std::string(path.substr(bucket_end + 1));
        if (auto st = check_key(location.prefix); !st)
            return bad_location(spec, "prefix: " + st.error().message());
    }
    return location;
}

Result<S3Credentials> load_s3_credentials(const std::string& file) {
    auto env = [](const char* name) -> std::string {
        const char* v = std::getenv(name);
        return v ? v : "";
    };
    S3Credentials credentials;
    if (!env("AWS_ACCESS_KEY_ID").empty()) {
        credentials.access_key_id = env("AWS_ACCESS_KEY_ID");
        credentials.secret_access_key = env("AWS_SECRET_ACCESS_KEY");
        credentials.session_token = env("AWS_SESSION_TOKEN");
        if (!env("AWS_DEFAULT_REGION").empty())
            credentials.region = env("AWS_DEFAULT_REGION");
        else if (!env("AWS_REGION").empty())
            credentials.region = env("AWS_REGION");
        if (credentials.secret_access_key.empty())
            return fail(
                ErrorKind::invalid_argument,
                "S3 credentials: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
        return credentials;
    }
    if (file.empty())
        return fail(ErrorKind::not_found,
                    "S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give a "
                    "credentials file (access_key_id, secret_access_key, region)");
    if (auto st = check_private_file(file); !st)
        return fail(st.error().with_context("S3 credentials"));
    try {
        auto root = toml::parse(file);
        auto text = [&](const char* key) -> std::string {
            if (!root.contains(key)) return "";
            return toml::get<std::string>(root.at(key));
        };
        credentials.access_key_id = text("access_key_id");
        credentials.secret_access_key = text("secret_access_key");
        credentials.session_token = text("session_token");
        if (auto region = text("region"); !region.empty()) credentials.region = region;
    } catch (const std::exception& e) {
        std::string what = e.what();
        if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
        return fail(ErrorKind::invalid_argument, "S3 credentials " + file + ": " + what);
    }
    if (credentials.access_key_id.empty() || credentials.secret_access_key.empty())
        return fail(ErrorKind::invalid_argument,
                    "S3 credentials " + file + ": access_key_id and secret_access_key are needed");
    for (const auto* value : {&credentials.access_key_id, &credentials.secret_access_key,
                              &credentials.region, &credentials.session_token})
        for (char c : *value)
            if (c < 0x21 || c > 0x7e)
                return fail(
                    ErrorKind::invalid_argument,
                    "S3 credentials " + file + ": a value has a space or control character");
    return credentials;
}

}  // namespace vmshadow::storage
