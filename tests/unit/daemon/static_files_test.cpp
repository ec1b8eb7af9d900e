// SPDX-License-Identifier: MIT
#include "daemon/static_files.h"

#include <gtest/gtest.h>

#include <fstream>

#include "unit/common/temp_dir.h"

namespace vmshadow::daemon {
namespace {

namespace fs = std::filesystem;

class StaticFilesTest : public ::testing::Test {
  protected:
    void SetUp() override {
        root_ = dir_.path / "dist";
        fs::create_directories(root_ / "assets");
        write(root_ / "index.html", "<!doctype html><title>vmshadow</title>");
        write(root_ / "assets" / "app-1a2b.js", "console.log(1)");
        write(root_ / "assets" / "app-1a2b.css", "body{}");
        write(root_ / "favicon.svg", "<svg/>");
        write(root_ / "logo.png", std::string("\x89PNG\r\n\x1a\n\0\0", 10));
        write(dir_.path / "secret.txt", "outside the root");
    }
    static void write(const fs::path& path, const std::string& text) {
        std::ofstream(path, std::ios::binary) << text;
    }
    static net::HttpRequest get(std::string path, std::string method = "GET") {
        net::HttpRequest r;
        r.method = std::move(method);
        r.path = std::move(path);
        r.target = r.path;
        return r;
    }
    static std::string header(const net::HttpResponse& r, std::string_view name) {
        for (const auto& [k, v] : r.headers)
            if (k == name) return v;
        return "";
    }
    test::TempDir dir_;
    fs::path root_;
};

TEST_F(StaticFilesTest, RootIsIndexHtmlWithTheSecurityHeadersAndNoCache) {
    StaticFiles files(root_);
    auto r = files.serve(get("/"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
    EXPECT_EQ(r.body, "<!doctype html><title>vmshadow</title>");
    EXPECT_EQ(header(r, "Content-Security-Policy"),
              "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
              "frame-ancestors 'none'");
    EXPECT_EQ(header(r, "X-Content-Type-Options"), "nosniff");
    EXPECT_EQ(header(r, "Referrer-Policy"), "no-referrer");
    EXPECT_EQ(header(r, "Cache-Control"), "no-cache");
    EXPECT_EQ(files.serve(get("/index.html")).body, r.body);
    EXPECT_EQ(files.serve(get("/", "HEAD")).status, 200);
}

TEST_F(StaticFilesTest, FilesHaveTheirContentTypesAndHashedAssetsAreCachedLong) {
    StaticFiles files(root_);
    auto js = files.serve(get("/assets/app-1a2b.js"));
    EXPECT_EQ(js.status, 200);
    EXPECT_EQ(js.content_type, "text/javascript; charset=utf-8");
    EXPECT_EQ(js.body, "console.log(1)");
    EXPECT_EQ(header(js, "Cache-Control"), "public, max-age=31536000, immutable");
    EXPECT_EQ(files.serve(get("/assets/app-1a2b.css")).content_type, "text/css; charset=utf-8");
    auto svg = files.serve(get("/favicon.svg"));
    EXPECT_EQ(svg.content_type, "image/svg+xml");
    EXPECT_EQ(header(svg, "Cache-Control"), "no-cache");
    auto png = files.serve(get("/logo.png"));
    EXPECT_EQ(png.content_type, "image/png");
    EXPECT_EQ(png.body.size(), 10u);  // binary, NUL bytes included
    EXPECT_EQ(content_type_for("a.woff2"), "font/woff2");
    EXPECT_EQ(content_type_for("a.js.map"), "application/json");
    EXPECT_EQ(content_type_for("data.json"), "application/json");
    EXPECT_EQ(content_type_for("x.bin"), "application/octet-stream");
}

TEST_F(StaticFilesTest, UnknownRoutesAreTheAppButMissingFilesAre404) {
    StaticFiles files(root_);
    for (const char* path : {"/vms/web1", "/jobs", "/tasks/17/", "/assets"}) {
        auto r = files.serve(get(path));
        EXPECT_EQ(r.status, 200) << path;
        EXPECT_EQ(r.content_type, "text/html; charset=utf-8") << path;
        EXPECT_EQ(header(r, "Cache-Control"), "no-cache") << path;
    }
    for (const char* path : {"/assets/gone-123.js", "/nope.css", "/vms/web1.png"})
        EXPECT_EQ(files.serve(get(path)).status, 404) << path;
}

TEST_F(StaticFilesTest, NothingOutsideTheRootIsServed) {
    StaticFiles files(root_);
    fs::create_symlink(dir_.path / "secret.txt", root_ / "link.txt");
    fs::create_symlink(dir_.path, root_ / "up");
    for (const char* path :
         {"/../secret.txt", "/assets/../../secret.txt", "/..", "/link.txt", "/up/secret.txt",
          "/up/dist/index.html", "/assets/..\\..\\secret.txt", "/%2e%2e/secret.txt"}) {
        auto r = files.serve(get(path));
        EXPECT_TRUE(r.status == 404 || r.body.find("outside") == std::string::npos) << path;
        EXPECT_EQ(r.body.find("outside the root"), std::string::npos) << path;
    }
    for (const char* path :
         {"/../secret.txt", "/assets/../../secret.txt", "/link.txt", "/up/secret.txt"})
        EXPECT_EQ(files.serve(get(path)).status, 404) << path;
    // A link that leads back inside the root is the file it names.
    EXPECT_EQ(files.serve(get("/up/dist/index.html")).status, 200);
}

TEST_F(StaticFilesTest, OnlyGetAndHeadAreServed) {
    StaticFiles files(root_);
    auto r = files.serve(get("/", "POST"));
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(header(r, "Allow"), "GET, HEAD");
}

TEST_F(StaticFilesTest, WithoutADashboardRootIs404SayingHowToBuildIt) {
    for (auto root : {std::optional<fs::path>(), std::optional<fs::path>(dir_.path / "missing")}) {
        StaticFiles files(root);
        auto r = files.serve(get("/"));
        EXPECT_EQ(r.status, 404);
        EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
        EXPECT_NE(r.body.find("not built"), std::string::npos) << r.body;
        EXPECT_NE(r.body.find("scripts/build.sh"), std::string::npos) << r.body;
        EXPECT_EQ(std::count(r.body.begin(), r.body.end(), '\n'), 1);
    }
}

TEST_F(StaticFilesTest, FindRootPrefersTheFlagThenTheInstallThenTheBuildTree) {
    fs::path flag = dir_.path / "flag";
    EXPECT_EQ(StaticFiles::find_root(flag, "/nonexistent/bin/vmshadowd"), flag);
    // The build tree: build/src/daemon/vmshadowd → web/dist.
    fs::path tree = dir_.path / "tree";
    fs::create_directories(tree / "build" / "src" / "daemon");
    fs::create_directories(tree / "web" / "dist");
    write(tree / "web" / "dist" / "index.html", "x");
    fs::path exe = tree / "build" / "src" / "daemon" / "vmshadowd";
    EXPECT_EQ(StaticFiles::find_root(std::nullopt, exe), tree / "web" / "dist");
    // An installed copy beside the binary wins.
    fs::path prefix = tree / "build" / "src";
    fs::create_directories(prefix / "share" / "vmshadow" / "web");
    write(prefix / "share" / "vmshadow" / "web" / "index.html", "x");
    EXPECT_EQ(StaticFiles::find_root(std::nullopt, exe), prefix / "share" / "vmshadow" / "web");
}

}  // namespace
}  // namespace vmshadow::daemon
