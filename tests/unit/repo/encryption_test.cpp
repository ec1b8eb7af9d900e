// SPDX-License-Identifier: MIT
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "repo/check.h"
#include "repo/keys.h"
#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

namespace fs = std::filesystem;

Result<std::unique_ptr<Repository>> open_with(const std::string& path, const std::string& pw) {
    OpenOptions o;
    o.password = [pw] { return Result<std::string>(pw); };
    return Repository::open(path, o);
}

class EncryptionTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path = dir.sub("repo");
        InitOptions init;
        init.encrypt = true;
        init.password = "correct horse";
        init.kdf.n = 1024;  // fast for tests; the default is 2^15
        init.chunk_size = 4096;
        ASSERT_TRUE(Repository::init(path, init));
    }
    TempDir dir;
    std::string path;
};

TEST_F(EncryptionTest, RoundTripIsBitExactAndStoresNoPlaintextOrPlainIds) {
    auto repo = open_with(path, "correct horse");
    ASSERT_TRUE(repo) << repo.error().message();
    Bytes data = text_data(40 * 4096, 5);
    std::string marker = "THE-SECRET-PAYLOAD-MARKER";
    std::copy(marker.begin(), marker.end(), data.begin() + 5000);
    auto p = backup_bytes(**repo, "secret-vm", {{"vda", data}});
    ASSERT_TRUE(p) << p.error().message();
    auto back = read_disk(**repo, *p, "vda");
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, data);
    // Ids are keyed: the plain SHA-256 of a chunk appears nowhere.
    ChunkMap map(**repo, p->disks[0].map, data.size(), 4096, (*repo)->config().map_fanout);
    auto id0 = map.chunk_id(0);
    ASSERT_TRUE(id0);
    EXPECT_NE(*id0, sha256(ByteView(data).first(4096)));
    for (auto& e : fs::recursive_directory_iterator(path)) {
        if (!e.is_regular_file()) continue;
        std::ifstream in(e.path(), std::ios::binary);
        std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        EXPECT_EQ(content.find(marker), std::string::npos) << e.path();
        EXPECT_EQ(content.find("secret-vm"), std::string::npos) << e.path() << " leaks the VM name";
    }
    auto report = check_repository(**repo, {.read_data = true});
    ASSERT_TRUE(report);
    EXPECT_TRUE(report->ok());
}

TEST_F(EncryptionTest, WrongPasswordIsAPermissionError) {
    auto repo = open_with(path, "wrong");
    ASSERT_FALSE(repo);
    EXPECT_EQ(repo.error().kind(), ErrorKind::permission);
    EXPECT_NE(repo.error().message().find("wrong password"), std::string::npos);
}

// A key file whose fields have the wrong type is damaged, not a json exception out of the
// repository: opening reports the password error and names the damaged file.
TEST_F(EncryptionTest, KeyFileWithFieldsOfTheWrongTypeIsReportedNotThrown) {
    std::string keys = path + "/keys";
    for (const char* text :
         {R"({"salt": 1, "sealed": "00"})", R"({"salt": "00", "sealed": "00", "n": "x"})"}) {
        std::ofstream(keys + "/damaged") << text;
        Result<std::unique_ptr<Repository>> repo = fail(ErrorKind::internal, "not run");
        EXPECT_NO_THROW(repo = open_with(path, "wrong")) << text;
        ASSERT_FALSE(repo) << text;
        EXPECT_EQ(repo.error().kind(), ErrorKind::permission) << text;
        EXPECT_NE(repo.error().message().find("damaged"), std::string::npos)
            << repo.error().message();
    }
}

TEST_F(EncryptionTest, SecondPasswordOpensAndPasswordChangesWithoutRewritingData) {
    auto repo = open_with(path, "correct horse");
    ASSERT_TRUE(repo);
    Bytes data = random_data(8 * 4096, 1);
    auto p = backup_bytes(**repo, "vm", {{"vda", data}});
    ASSERT_TRUE(p);
    auto before = dir_bytes(path + "/data");
    auto second =
        add_key((*repo)->env(), path, *(*repo)->master_key(), "battery staple", {1024, 8, 1});
    ASSERT_TRUE(second);
    auto again = open_with(path, "battery staple");
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ((*again)->key_id(), *second);
    ASSERT_TRUE((*again)->load_index());
    auto back = read_disk(**again, *p, "vda");
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, data);
    // "passwd": the first password's key goes; data is untouched.
    ASSERT_TRUE(remove_key((*repo)->env(), path, (*repo)->key_id()));
    EXPECT_FALSE(open_with(path, "correct horse"));
    EXPECT_TRUE(open_with(path, "battery staple"));
    EXPECT_EQ(dir_bytes(path + "/data"), before);
}

}  // namespace
}  // namespace vmshadow::repo::test
