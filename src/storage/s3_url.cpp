// SPDX-License-Identifier: MIT
#include "storage/s3_url.h"

#include <algorithm>

namespace vmshadow::storage {

std::string uri_encode(std::string_view text, bool keep_slash) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size() * 3);
    for (unsigned char c : text) {
        bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved || (keep_slash && c == '/')) {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
    return out;
}

std::string canonical_query(QueryParams params) {
    // AWS sorts by the encoded name; our names are plain words, so raw order is the same.
    for (auto& [name, value] : params) {
        name = uri_encode(name, false);
        value = uri_encode(value, false);
    }
    std::sort(params.begin(), params.end());
    std::string out;
    for (const auto& [name, value] : params) {
        if (!out.empty()) out += '&';
        out += name;
        out += '=';
        out += value;
    }
    return out;
}

std::string s3_url(const S3Location& location, bool virtual_hosted, std::string_view object_key,
                   const QueryParams& query) {
    std::string url;
    if (virtual_hosted) {
        auto scheme_end = location.endpoint.find("://");
        auto host_start = scheme_end == std::string::npos ? 0 : scheme_end + 3;
        url = location.endpoint.substr(0, host_start) + location.bucket + "." +
              location.endpoint.substr(host_start) + "/";
    } else {
        url = location.endpoint + "/" + location.bucket;
        if (!object_key.empty()) url += "/";
    }
    url += uri_encode(object_key, true);
    if (!query.empty()) url += "?" + canonical_query(query);
    return url;
}

}  // namespace vmshadow::storage
