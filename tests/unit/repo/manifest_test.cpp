// SPDX-License-Identifier: MIT
// A damaged manifest is a corruption error naming what is damaged, never an exception.
#include "repo/manifest.h"

#include <gtest/gtest.h>

namespace vmshadow::repo {
namespace {

using nlohmann::json;

json manifest_with_disk_map(json map) {
    return {{"vm", "web1"},
            {"time", 1},
            {"consistency", "crash"},
            {"disks", json::array({{{"name", "vda"}, {"size", 4096}, {"map", map}}})}};
}

TEST(Manifest, BadMapRootIdIsCorruptionNamingTheDisk) {
    auto p = manifest_from_json(manifest_with_disk_map({{"root", "not-hex"}, {"levels", 1}}));
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().kind(), ErrorKind::corruption);
    EXPECT_NE(p.error().message().find("disk vda"), std::string::npos) << p.error().message();
}

TEST(Manifest, FieldOfTheWrongTypeIsCorruptionNotAnException) {
    for (const json& j : {manifest_with_disk_map({{"root", 5}, {"levels", 1}}),
                          manifest_with_disk_map("map"), json{{"vm", 1}}, json::array()}) {
        Result<RestorePoint> p = fail(ErrorKind::internal, "not run");
        EXPECT_NO_THROW(p = manifest_from_json(j)) << j.dump();
        ASSERT_FALSE(p) << j.dump();
        EXPECT_EQ(p.error().kind(), ErrorKind::corruption) << j.dump();
    }
}

TEST(Manifest, GoodManifestRoundTrips) {
    std::string hex(64, 'a');
    auto p = manifest_from_json(manifest_with_disk_map({{"root", hex}, {"levels", 2}}));
    ASSERT_TRUE(p) << p.error().message();
    ASSERT_EQ(p->disks.size(), 1u);
    EXPECT_EQ(p->disks[0].map.levels, 2u);
    EXPECT_EQ(p->disks[0].map.root.hex(), hex);
}

}  // namespace
}  // namespace vmshadow::repo
