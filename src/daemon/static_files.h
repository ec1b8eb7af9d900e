// SPDX-License-Identifier: MIT
#pragma once
// StaticFiles: the dashboard's built front-end (web/dist), served by vmshadowd at `/` — every
// GET or HEAD whose path is not under /api/.
//
// `/` is index.html; a missing path whose last segment has no extension is index.html too
// (the single-page app routes it: /vms/web1); a missing file with an extension is 404. Files
// are read from inside the root only: a path with a ".." segment, or one that resolves
// (symlinks followed) outside the root, is 404. Every answer carries the dashboard's security
// headers (a Content-Security-Policy allowing only the daemon's own scripts and styles,
// nosniff, no referrer); index.html is "Cache-Control: no-cache", files under /assets/ (the
// build's content-hashed names) are cached for a year, others revalidated.
// Without a root (the dashboard was not built), `/` answers 404 saying so.
//
// It is not: the API (api_routes.h) or a general web server (no listings, no ranges).
//
// Thread-safety: const after construction; serve() may be called from many threads.

#include <filesystem>
#include <optional>
#include <string_view>
#include <vector>

#include "net/http.h"

namespace vmshadow::daemon {

class StaticFiles {
  public:
    // `root`: the directory holding index.html; nullopt: no dashboard.
    explicit StaticFiles(std::optional<std::filesystem::path> root);

    net::HttpResponse serve(const net::HttpRequest& request) const;
    const std::optional<std::filesystem::path>& root() const { return root_; }

    // The web directory: `flag` when given (even if missing: the operator asked for it), else
    // the first existing of <exe>/../share/vmshadow/web, <exe>/../../../web/dist (the build
    // tree) and /usr/local/share/vmshadow/web; nullopt when none exists.
    static std::optional<std::filesystem::path> find_root(
        const std::optional<std::filesystem::path>& flag, const std::filesystem::path& exe);

  private:
    std::optional<std::filesystem::path> root_;  // canonical
};

// The Content-Type for a file name by its extension (application/octet-stream when unknown).
std::string_view content_type_for(std::string_view file_name);

}  // namespace vmshadow::daemon
