// SPDX-License-Identifier: MIT
#include "daemon/session_store.h"

#include <gtest/gtest.h>

#include <set>

namespace vmshadow::daemon {
namespace {

class SessionStoreTest : public ::testing::Test {
  protected:
    ManualClock clock_{Clock::time_point(std::chrono::seconds(1'800'000'000))};
    TokenInfo oper_{"oper", Role::operator_, 1};
    TokenInfo audit_{"auditor", Role::audit, 1};
};

TEST_F(SessionStoreTest, IdsAndCsrfValuesAreRandomHexAndDistinct) {
    SessionStore store(clock_);
    std::set<std::string> seen;
    for (int i = 0; i < 50; ++i) {
        auto s = store.create(oper_);
        for (const auto& v : {s.id, s.csrf}) {
            EXPECT_EQ(v.size(), 64u);
            EXPECT_EQ(v.find_first_not_of("0123456789abcdef"), std::string::npos) << v;
            EXPECT_TRUE(seen.insert(v).second) << "a value came twice: " << v;
        }
        EXPECT_EQ(s.name, "oper");
        EXPECT_EQ(s.role, Role::operator_);
    }
}

TEST_F(SessionStoreTest, FindNeedsTheWholeIdExactly) {
    SessionStore store(clock_);
    auto s = store.create(oper_);
    EXPECT_TRUE(store.find(s.id));
    for (const std::string& wrong :
         {s.id.substr(0, 63), s.id + "0", std::string(), std::string(64, '0'), s.csrf}) {
        EXPECT_FALSE(store.find(wrong)) << wrong;
    }
}

TEST_F(SessionStoreTest, IdleTimeoutIsThirtyMinutesFromTheLastUse) {
    SessionStore store(clock_);
    auto s = store.create(oper_);
    EXPECT_EQ(s.expires(), 1'800'000'000 + 1800);
    clock_.advance(std::chrono::minutes(25));
    auto used = store.find(s.id);
    ASSERT_TRUE(used);
    EXPECT_EQ(used->expires(), 1'800'000'000 + 25 * 60 + 1800);
    clock_.advance(std::chrono::minutes(29));
    EXPECT_TRUE(store.find(s.id));
    clock_.advance(std::chrono::minutes(30));
    EXPECT_FALSE(store.find(s.id));
    EXPECT_EQ(store.size(), 0u);
}

TEST_F(SessionStoreTest, AbsoluteTimeoutIsEightHoursWhateverTheUse) {
    SessionStore store(clock_);
    auto s = store.create(oper_);
    for (int minute = 10; minute < 8 * 60; minute += 10) {
        clock_.advance(std::chrono::minutes(10));
        ASSERT_TRUE(store.find(s.id)) << minute;
    }
    auto last = store.find(s.id);
    ASSERT_TRUE(last);
    EXPECT_EQ(last->expires(), 1'800'000'000 + 8 * 3600);
    clock_.advance(std::chrono::minutes(10));
    EXPECT_FALSE(store.find(s.id));
}

TEST_F(SessionStoreTest, CountIsBoundedAndTheOldestGoesFirst) {
    SessionStore store(clock_, 3);
    std::vector<Session> made;
    for (int i = 0; i < 5; ++i) made.push_back(store.create(oper_));
    EXPECT_EQ(store.size(), 3u);
    EXPECT_FALSE(store.find(made[0].id));
    EXPECT_FALSE(store.find(made[1].id));
    for (int i = 2; i < 5; ++i) EXPECT_TRUE(store.find(made[i].id)) << i;
}

TEST_F(SessionStoreTest, RemoveAndRemoveTokenEndSessions) {
    SessionStore store(clock_);
    auto a = store.create(oper_);
    auto b = store.create(oper_);
    auto c = store.create(audit_);
    EXPECT_TRUE(store.remove(a.id));
    EXPECT_FALSE(store.remove(a.id));
    EXPECT_FALSE(store.find(a.id));
    store.remove_token("oper");
    EXPECT_FALSE(store.find(b.id));
    EXPECT_TRUE(store.find(c.id));
}

TEST(EqualSecret, ComparesWholeValues) {
    EXPECT_TRUE(equal_secret("abc", "abc"));
    EXPECT_FALSE(equal_secret("abc", "abd"));
    EXPECT_FALSE(equal_secret("abc", "ab"));
    EXPECT_FALSE(equal_secret("", "a"));
    EXPECT_TRUE(equal_secret("", ""));
}

}  // namespace
}  // namespace vmshadow::daemon
