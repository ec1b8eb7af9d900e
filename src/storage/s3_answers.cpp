// SPDX-License-Identifier: MIT
#include "storage/s3_answers.h"

#include <charconv>
#include <ctime>
#include <pugixml.hpp>

namespace vmshadow::storage {
namespace {

std::unexpected<Error> hostile(const std::string& what) {
    return fail(ErrorKind::corruption, "the gateway's answer " + what);
}

// Parses a bounded body; pugixml knows no DTD entities beyond the five predefined ones.
Result<pugi::xml_node> load(pugi::xml_document& doc, std::string_view body, std::size_t bound,
                            const char* root) {
    if (body.size() > bound)
        return hostile("is " + std::to_string(body.size()) + " bytes, more than the " +
                       std::to_string(bound) + " allowed");
    auto parsed =
        doc.load_buffer(body.data(), body.size(), pugi::parse_default, pugi::encoding_utf8);
    if (!parsed)
        return hostile(std::string("is no well-formed XML (") + parsed.description() + ")");
    auto node = doc.document_element();
    if (std::string_view(node.name()) != root)
        return hostile(std::string("is <") + node.name() + ">, not <" + root + ">");
    return node;
}

std::optional<std::uint64_t> parse_u64(std::string_view text) {
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
    return value;
}

}  // namespace

S3ErrorAnswer parse_error_answer(std::string_view body) {
    pugi::xml_document doc;
    auto node = load(doc, body, kMaxSmallAnswerBytes, "Error");
    if (!node) return {};
    auto clip = [](std::string text) {
        if (text.size() > 200) text.resize(200);
        for (auto& c : text)
            if (c < 0x20 || c == 0x7f) c = ' ';  // no terminal escapes from a gateway
        return text;
    };
    return {clip(node->child_value("Code")), clip(node->child_value("Message"))};
}

Result<ListPage> parse_list_page(std::string_view body, std::string_view store_prefix,
                                 std::string_view list_prefix, std::string_view after) {
    pugi::xml_document doc;
    auto root = load(doc, body, kMaxListAnswerBytes, "ListBucketResult");
    if (!root) return fail(root.error());
    ListPage page;
    std::string full_prefix = std::string(store_prefix) + std::string(list_prefix);
    std::string previous(after);
    int count = 0;
    for (auto contents : root->children("Contents")) {
        if (++count > kMaxKeysPerPage)
            return hostile("lists more than " + std::to_string(kMaxKeysPerPage) + " keys");
        std::string key = contents.child_value("Key");
        if (!key.starts_with(full_prefix))
            return hostile("lists '" + key.substr(0, 200) + "', not under '" + full_prefix + "'");
        if (!previous.empty() && key <= previous)
            return hostile("lists '" + key.substr(0, 200) + "' out of order");
        previous = key;
        auto relative = key.substr(store_prefix.size());
        if (!check_key(relative)) {
            page.skipped.push_back(key.substr(0, 200));
            continue;
        }
        auto size = parse_u64(contents.child_value("Size"));
        if (!size) return hostile("gives '" + key + "' no valid size");
        auto modified = parse_iso8601_utc(contents.child_value("LastModified"));
        if (!modified) return hostile("gives '" + key + "' no valid LastModified");
        page.objects.push_back(BlobInfo{relative, *size, *modified});
    }
    if (previous != after) page.last_key = previous;
    std::string_view truncated = root->child_value("IsTruncated");
    if (truncated != "true" && truncated != "false")
        return hostile("has no IsTruncated true or false");
    page.truncated = truncated == "true";
    if (page.truncated) {
        page.next_token = root->child_value("NextContinuationToken");
        if (page.next_token.empty() || page.next_token.size() > 4096)
            return hostile("is truncated without a usable NextContinuationToken");
        if (count == 0) return hostile("is truncated but lists no key");
    }
    return page;
}

Result<std::string> parse_upload_id(std::string_view body) {
    pugi::xml_document doc;
    auto root = load(doc, body, kMaxSmallAnswerBytes, "InitiateMultipartUploadResult");
    if (!root) return fail(root.error());
    std::string id = root->child_value("UploadId");
    if (id.empty() || id.size() > 1024) return hostile("has no usable UploadId");
    for (char c : id)
        if (c < 0x21 || c > 0x7e) return hostile("has an UploadId with unprintable bytes");
    return id;
}

Status check_complete_answer(std::string_view body) {
    pugi::xml_document doc;
    auto root = load(doc, body, kMaxSmallAnswerBytes, "CompleteMultipartUploadResult");
    if (!root) return fail(root.error());
    return {};
}

std::optional<std::int64_t> parse_iso8601_utc(std::string_view text) {
    // YYYY-MM-DDTHH:MM:SS, optional fraction, then Z.
    if (text.size() < 20 || text.size() > 40 || text.back() != 'Z') return std::nullopt;
    auto number = [&](std::size_t at, std::size_t len) -> int {
        int v = 0;
        for (std::size_t i = at; i < at + len; ++i) {
            if (text[i] < '0' || text[i] > '9') return -1;
            v = v * 10 + (text[i] - '0');
        }
        return v;
    };
    if (text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' || text[16] != ':')
        return std::nullopt;
    auto rest = text.substr(19, text.size() - 20);
    if (!rest.empty()) {
        if (rest[0] != '.' || rest.size() < 2) return std::nullopt;
        for (char c : rest.substr(1))
            if (c < '0' || c > '9') return std::nullopt;
    }
    std::tm tm{};
    tm.tm_year = number(0, 4) - 1900;
    tm.tm_mon = number(5, 2) - 1;
    tm.tm_mday = number(8, 2);
    tm.tm_hour = number(11, 2);
    tm.tm_min = number(14, 2);
    tm.tm_sec = number(17, 2);
    if (tm.tm_year < 0 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 ||
        tm.tm_sec > 60)
        return std::nullopt;
    return static_cast<std::int64_t>(::timegm(&tm));
}

}  // namespace vmshadow::storage
