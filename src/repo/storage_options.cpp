// SPDX-License-Identifier: MIT
#include "repo/storage_options.h"

#include <cstdlib>
#include <filesystem>

namespace vmshadow::repo {
namespace {

std::string absolute(const std::string& path) {
    std::error_code ec;
    auto full = std::filesystem::absolute(path, ec);
    return ec ? path : full.string();
}

std::string variable(const char* name) {
    const char* value = std::getenv(name);
    return value ? value : "";
}

}  // namespace

std::vector<std::string> storage_environment(const StorageOptions& o) {
    std::vector<std::string> env;
    if (!o.credentials_file.empty())
        env.push_back("VMSHADOW_S3_CREDENTIALS=" + absolute(o.credentials_file));
    if (!o.ca_file.empty()) env.push_back("VMSHADOW_S3_CACERT=" + absolute(o.ca_file));
    if (o.virtual_hosted) env.push_back("VMSHADOW_S3_VIRTUAL_HOSTED=1");
    if (o.max_requests_per_second > 0)
        env.push_back("VMSHADOW_S3_MAX_RPS=" + std::to_string(o.max_requests_per_second));
    if (o.max_bytes_per_second > 0)
        env.push_back("VMSHADOW_S3_MAX_BANDWIDTH=" + std::to_string(o.max_bytes_per_second));
    if (!o.cache_dir.empty())
        env.push_back("VMSHADOW_CACHE_DIR=" +
                      (o.cache_dir == "none" ? o.cache_dir : absolute(o.cache_dir)));
    return env;
}

StorageOptions storage_options_from_environment() {
    StorageOptions o;
    o.credentials_file = variable("VMSHADOW_S3_CREDENTIALS");
    o.ca_file = variable("VMSHADOW_S3_CACERT");
    std::string hosted = variable("VMSHADOW_S3_VIRTUAL_HOSTED");
    o.virtual_hosted = !hosted.empty() && hosted != "0" && hosted != "false";
    char* end = nullptr;
    std::string rps = variable("VMSHADOW_S3_MAX_RPS");
    if (double v = std::strtod(rps.c_str(), &end); !rps.empty() && *end == '\0' && v > 0)
        o.max_requests_per_second = v;
    std::string bw = variable("VMSHADOW_S3_MAX_BANDWIDTH");
    if (unsigned long long v = std::strtoull(bw.c_str(), &end, 10); !bw.empty() && *end == '\0')
        o.max_bytes_per_second = v;
    o.cache_dir = variable("VMSHADOW_CACHE_DIR");
    return o;
}

}  // namespace vmshadow::repo
