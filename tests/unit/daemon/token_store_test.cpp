// SPDX-License-Identifier: MIT
#include "daemon/token_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>
#include <vector>

#include "unit/common/temp_dir.h"

namespace vmshadow::daemon {
namespace {

using test::TempDir;

const Clock::time_point kStart = std::chrono::sys_days{std::chrono::year{2026} / 12 / 1};

struct TokenStoreTest : ::testing::Test {
    TempDir dir;
    ManualClock clock{kStart};
    std::filesystem::path file = dir.path / "state" / "tokens.json";

    std::unique_ptr<TokenStore> open() {
        auto store = TokenStore::open(file, clock);
        EXPECT_TRUE(store) << (store ? "" : store.error().message());
        return store ? std::move(*store) : nullptr;
    }
};

TEST_F(TokenStoreTest, CreatedTokenAuthenticatesWithItsRole) {
    auto store = open();
    EXPECT_TRUE(store->list().empty());
    EXPECT_FALSE(std::filesystem::exists(file)) << "nothing written before the first token";
    auto token = store->create("ci", Role::operator_);
    ASSERT_TRUE(token) << token.error().message();
    ASSERT_EQ(token->size(), 3u + 64u);
    EXPECT_TRUE(token->starts_with("ci:"));
    auto info = store->authenticate(*token);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->name, "ci");
    EXPECT_EQ(info->role, Role::operator_);
    EXPECT_EQ(info->created, unix_seconds(kStart));
    auto second = store->create("ci2", Role::admin);
    ASSERT_TRUE(second);
    EXPECT_NE(second->substr(4), token->substr(3)) << "secrets are random";
    EXPECT_EQ(store->authenticate(*second)->role, Role::admin);
}

TEST_F(TokenStoreTest, OnlyTheHashOfTheSecretIsStored) {
    auto store = open();
    auto token = store->create("ci", Role::audit);
    ASSERT_TRUE(token);
    std::string text = test::read_all(file.string());
    EXPECT_EQ(text.find(token->substr(3)), std::string::npos);
    EXPECT_NE(text.find("secret_sha256"), std::string::npos);
}

TEST_F(TokenStoreTest, WrongUnknownOrMalformedTokensFail) {
    auto store = open();
    auto token = store->create("ci", Role::admin);
    ASSERT_TRUE(token);
    std::string secret = token->substr(3);
    std::string wrong = *token;
    wrong.back() = wrong.back() == '0' ? '1' : '0';
    EXPECT_FALSE(store->authenticate(wrong));
    EXPECT_FALSE(store->authenticate("other:" + secret));
    EXPECT_FALSE(store->authenticate("ci" + secret));  // no colon
    EXPECT_FALSE(store->authenticate(""));
    EXPECT_FALSE(store->authenticate(":"));
    EXPECT_FALSE(store->authenticate("ci:"));
    EXPECT_FALSE(store->authenticate(":" + secret));
    EXPECT_FALSE(store->authenticate(*token + "x"));
    EXPECT_FALSE(store->authenticate(*token + "\n"));
    EXPECT_FALSE(store->authenticate(" " + *token));
    EXPECT_FALSE(store->authenticate(std::string(10 * 1024, 'a')));
    EXPECT_FALSE(store->authenticate("ci:" + std::string(10 * 1024, 'a')));
    EXPECT_TRUE(store->authenticate(*token));
}

TEST_F(TokenStoreTest, RevokedTokenNoLongerAuthenticates) {
    auto store = open();
    auto token = store->create("ci", Role::admin);
    auto kept = store->create("ops", Role::audit);
    ASSERT_TRUE(token && kept);
    ASSERT_TRUE(store->revoke("ci"));
    EXPECT_FALSE(store->authenticate(*token));
    EXPECT_TRUE(store->authenticate(*kept));
    auto again = store->revoke("ci");
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().kind(), ErrorKind::not_found);
    EXPECT_FALSE(open()->authenticate(*token)) << "revocation is on disk";
}

TEST_F(TokenStoreTest, TokensPersistAcrossReopen) {
    std::string token;
    {
        auto store = open();
        token = store->create("ci", Role::operator_).value();
    }
    auto store = open();
    auto listed = store->list();
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].name, "ci");
    EXPECT_EQ(listed[0].role, Role::operator_);
    EXPECT_EQ(listed[0].created, unix_seconds(kStart));
    EXPECT_TRUE(store->authenticate(token));
}

TEST_F(TokenStoreTest, FileIsWrittenWithMode0600) {
    auto store = open();
    ASSERT_TRUE(store->create("ci", Role::admin));
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(TokenStoreTest, FileReadableByOthersIsRefusedWithChmodAdvice) {
    ASSERT_TRUE(open()->create("ci", Role::admin));
    std::filesystem::permissions(file, std::filesystem::perms(0644));
    auto store = TokenStore::open(file, clock);
    ASSERT_FALSE(store);
    EXPECT_EQ(store.error().kind(), ErrorKind::permission);
    EXPECT_NE(store.error().message().find("chmod 600"), std::string::npos)
        << store.error().message();
}

TEST_F(TokenStoreTest, ChangesRefusedOnceTheFileBecomesReadableByOthers) {
    auto store = open();
    ASSERT_TRUE(store->create("ci", Role::admin));
    std::filesystem::permissions(file, std::filesystem::perms(0640));
    EXPECT_EQ(store->create("two", Role::audit).error().kind(), ErrorKind::permission);
    EXPECT_EQ(store->reload().error().kind(), ErrorKind::permission);
}

TEST_F(TokenStoreTest, ReloadSeesAnotherInstancesChanges) {
    auto first = open();
    auto second = open();
    auto token = first->create("ci", Role::admin);
    ASSERT_TRUE(token);
    EXPECT_FALSE(second->authenticate(*token));
    ASSERT_TRUE(second->reload());
    EXPECT_TRUE(second->authenticate(*token));
    ASSERT_TRUE(first->revoke("ci"));
    ASSERT_TRUE(second->reload());
    EXPECT_FALSE(second->authenticate(*token));
}

TEST_F(TokenStoreTest, ChangesThroughTwoInstancesAreBothKept) {
    auto first = open();
    auto second = open();  // read before first's change: stale
    auto a = first->create("a", Role::admin);
    auto b = second->create("b", Role::audit);
    ASSERT_TRUE(a && b);
    auto reopened = open();
    EXPECT_TRUE(reopened->authenticate(*a));
    EXPECT_TRUE(reopened->authenticate(*b));
}

TEST_F(TokenStoreTest, DuplicateNameIsAConflict) {
    auto first = open();
    auto second = open();
    auto token = first->create("ci", Role::admin);
    ASSERT_TRUE(token);
    auto same = first->create("ci", Role::audit);
    ASSERT_FALSE(same);
    EXPECT_EQ(same.error().kind(), ErrorKind::conflict);
    auto stale = second->create("ci", Role::audit);  // through an instance that had not seen it
    ASSERT_FALSE(stale);
    EXPECT_EQ(stale.error().kind(), ErrorKind::conflict);
    EXPECT_EQ(open()->authenticate(*token)->role, Role::admin);
}

TEST_F(TokenStoreTest, BadNamesAreRefused) {
    auto store = open();
    for (const std::string& bad :
         std::vector<std::string>{"", "CI", "-ci", "_ci", "c i", "a:b", "ci/x", "ci.x", "é",
                                  std::string(64, 'a'), std::string("a\0b", 3)}) {
        auto token = store->create(bad, Role::admin);
        ASSERT_FALSE(token) << bad;
        EXPECT_EQ(token.error().kind(), ErrorKind::invalid_argument) << bad;
    }
    for (const std::string& good :
         std::vector<std::string>{"a", "0", "ci-runner_2", std::string(63, 'z')})
        EXPECT_TRUE(store->create(good, Role::audit)) << good;
    EXPECT_EQ(store->list().size(), 4u);
}

TEST_F(TokenStoreTest, DamagedFileIsCorruptionNamingIt) {
    std::filesystem::create_directories(file.parent_path());
    for (const std::string& text : std::vector<std::string>{
             "not json", "[]", R"({"version": 1})", R"({"version": 1, "tokens": [{"name": "ci"}]})",
             R"({"version": 1, "tokens": [{"name": "ci", "role": "root", "created": 1,
              "secret_sha256": ")" +
                 std::string(64, 'a') + "\"}]}"}) {
        std::ofstream(file) << text;
        std::filesystem::permissions(file, std::filesystem::perms(0600));
        auto store = TokenStore::open(file, clock);
        ASSERT_FALSE(store) << text;
        EXPECT_EQ(store.error().kind(), ErrorKind::corruption) << text;
        EXPECT_NE(store.error().message().find(file.string()), std::string::npos);
    }
    std::ofstream(file) << R"({"version": 2, "tokens": []})";
    EXPECT_EQ(TokenStore::open(file, clock).error().kind(), ErrorKind::unsupported);
}

TEST(Roles, NamesRoundTripAndRanksOrder) {
    for (Role role : {Role::audit, Role::operator_, Role::admin})
        EXPECT_EQ(parse_role(role_name(role)), role);
    EXPECT_EQ(role_name(Role::operator_), "operator");
    EXPECT_FALSE(parse_role("root"));
    EXPECT_FALSE(parse_role("operator_"));
    EXPECT_TRUE(role_allows(Role::admin, Role::operator_));
    EXPECT_TRUE(role_allows(Role::admin, Role::audit));
    EXPECT_TRUE(role_allows(Role::operator_, Role::audit));
    EXPECT_TRUE(role_allows(Role::operator_, Role::operator_));
    EXPECT_FALSE(role_allows(Role::audit, Role::operator_));
    EXPECT_FALSE(role_allows(Role::operator_, Role::admin));
    EXPECT_FALSE(role_allows(Role::audit, Role::admin));
}

}  // namespace
}  // namespace vmshadow::daemon
