// SPDX-License-Identifier: MIT
#include "net/http.h"

#include <algorithm>
#include <cctype>

#include "common/hex.h"

namespace vmshadow::net {

std::string HttpRequest::header(std::string_view name) const {
    std::string key(name);
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto it = headers.find(key);
    return it == headers.end() ? std::string() : it->second;
}

std::string_view status_reason(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 201:
            return "Created";
        case 202:
            return "Accepted";
        case 204:
            return "No Content";
        case 400:
            return "Bad Request";
        case 401:
            return "Unauthorized";
        case 403:
            return "Forbidden";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 409:
            return "Conflict";
        case 411:
            return "Length Required";
        case 413:
            return "Payload Too Large";
        case 415:
            return "Unsupported Media Type";
        case 429:
            return "Too Many Requests";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 501:
            return "Not Implemented";
        case 503:
            return "Service Unavailable";
        case 504:
            return "Gateway Timeout";
        default:
            return "";
    }
}

namespace {}  // namespace

std::optional<std::string> percent_decode(std::string_view text, bool query_component) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '%') {
            if (i + 2 >= text.size()) return std::nullopt;
            int hi = hex_digit_value(text[i + 1]);
            int lo = hex_digit_value(text[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            char decoded = static_cast<char>(hi * 16 + lo);
            if (decoded == '\0') return std::nullopt;
            out.push_back(decoded);
            i += 2;
        } else if (c == '+' && query_component) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return out;
}

std::optional<std::map<std::string, std::string>> parse_query(std::string_view query) {
    std::map<std::string, std::string> out;
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        if (pair.empty()) continue;
        auto eq = pair.find('=');
        auto key = percent_decode(pair.substr(0, eq), true);
        auto value = percent_decode(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true);
        if (!key || !value || key->empty()) return std::nullopt;
        out[*key] = *value;
    }
    return out;
}

int http_status_for(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::invalid_argument:
            return 400;
        case ErrorKind::not_found:
            return 404;
        case ErrorKind::conflict:
        case ErrorKind::locked:
        case ErrorKind::cancelled:
            return 409;
        case ErrorKind::permission:
            return 403;
        case ErrorKind::unsupported:
            return 501;
        case ErrorKind::unavailable:
            return 503;
        case ErrorKind::timeout:
            return 504;
        default:
            return 500;
    }
}

ErrorKind error_kind_for_status(int status) {
    switch (status) {
        case 400:
        case 405:
        case 413:
        case 414:
        case 431:
            return ErrorKind::invalid_argument;
        case 401:
        case 403:
            return ErrorKind::permission;
        case 404:
            return ErrorKind::not_found;
        case 409:
            return ErrorKind::conflict;
        case 501:
            return ErrorKind::unsupported;
        case 502:
        case 503:
            return ErrorKind::unavailable;
        case 504:
            return ErrorKind::timeout;
        default:
            return ErrorKind::internal;
    }
}

}  // namespace vmshadow::net
