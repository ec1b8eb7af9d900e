// SPDX-License-Identifier: MIT
#include "daemon/static_files.h"

#include <array>
#include <fstream>
#include <iterator>
#include <utility>

namespace vmshadow::daemon {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kCsp =
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'";

void add_security_headers(net::HttpResponse& response) {
    response.headers.emplace_back("Content-Security-Policy", std::string(kCsp));
    response.headers.emplace_back("X-Content-Type-Options", "nosniff");
    response.headers.emplace_back("Referrer-Policy", "no-referrer");
}

net::HttpResponse text_response(int status, std::string text) {
    net::HttpResponse response;
    response.status = status;
    response.content_type = "text/plain; charset=utf-8";
    response.body = std::move(text);
    add_security_headers(response);
    response.headers.emplace_back("Cache-Control", "no-cache");
    return response;
}

net::HttpResponse not_found() {
    return text_response(404, "not found\n");
}

std::optional<std::string> read_whole(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return std::nullopt;
    return data;
}

// `path` (canonical) is `root` or below it.
bool inside(const fs::path& path, const fs::path& root) {
    auto [r, p] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
    return r == root.end();
}

// The request path as a relative path of safe segments, or nullopt (a ".." segment, a NUL,
// a backslash).
std::optional<fs::path> relative_of(std::string_view url_path) {
    fs::path out;
    std::size_t pos = 0;
    while (pos <= url_path.size()) {
        auto next = url_path.find('/', pos);
        if (next == std::string_view::npos) next = url_path.size();
        auto segment = url_path.substr(pos, next - pos);
        pos = next + 1;
        if (segment.empty() || segment == ".") continue;
        if (segment == ".." || segment.find('\0') != std::string_view::npos ||
            segment.find('\\') != std::string_view::npos)
            return std::nullopt;
        out /= std::string(segment);
    }
    return out;
}

}  // namespace

std::string_view content_type_for(std::string_view file_name) {
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 12> kTypes{{
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".woff2", "font/woff2"},
        {".txt", "text/plain; charset=utf-8"},
        {".webmanifest", "application/manifest+json"},
    }};
    for (const auto& [ext, type] : kTypes)
        if (file_name.ends_with(ext)) return type;
    return "application/octet-stream";
}

StaticFiles::StaticFiles(std::optional<fs::path> root) {
    if (!root) return;
    std::error_code ec;
    auto canonical = fs::canonical(*root, ec);
    if (!ec && fs::is_directory(canonical, ec)) root_ = canonical;
}

std::optional<fs::path> StaticFiles::find_root(const std::optional<fs::path>& flag,
                                               const fs::path& exe) {
    if (flag) return flag;
    const fs::path dir = exe.parent_path();
    for (const fs::path& candidate :
         {dir / ".." / "share" / "vmshadow" / "web", dir / ".." / ".." / ".." / "web" / "dist",
          fs::path("/usr/local/share/vmshadow/web")}) {
        std::error_code ec;
        if (fs::is_regular_file(candidate / "index.html", ec)) return candidate.lexically_normal();
    }
    return std::nullopt;
}

net::HttpResponse StaticFiles::serve(const net::HttpRequest& request) const {
    if (request.method != "GET" && request.method != "HEAD") {
        auto response = text_response(405, "only GET and HEAD are served here\n");
        response.headers.emplace_back("Allow", "GET, HEAD");
        return response;
    }
    if (!root_)
        return text_response(404,
                             "the vmshadow dashboard is not built: run scripts/build.sh (or give "
                             "vmshadowd --web-dir DIR)\n");
    auto relative = relative_of(request.path);
    if (!relative) return not_found();
    std::error_code ec;
    fs::path file = *root_ / *relative;
    auto status = fs::status(file, ec);
    if (relative->empty() || fs::is_directory(status)) {
        file = *root_ / "index.html";
    } else if (!fs::exists(status)) {
        // A client-side route (/vms/web1) is the app's; a missing asset is a real 404.
        if (relative->filename().has_extension()) return not_found();
        file = *root_ / "index.html";
    }
    // Symlinks are followed, then the target must still be inside the root.
    auto real = fs::canonical(file, ec);
    if (ec || !inside(real, *root_) || !fs::is_regular_file(real, ec)) return not_found();
    auto data = read_whole(real);
    if (!data) return not_found();
    net::HttpResponse response;
    response.content_type = std::string(content_type_for(real.filename().string()));
    response.body = std::move(*data);
    add_security_headers(response);
    bool hashed =
        !relative->empty() && *relative->begin() == "assets" && real.filename() != "index.html";
    response.headers.emplace_back("Cache-Control",
                                  hashed ? "public, max-age=31536000, immutable" : "no-cache");
    return response;
}

}  // namespace vmshadow::daemon
