// SPDX-License-Identifier: MIT
#include "vss/exec_writer_config.h"

#include <gtest/gtest.h>

#include "unit/vss/temp_dir.h"

namespace vmshadow::vss {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;

TEST(ExecWriterConfig, FullConfigIsRead) {
    auto config = parse_exec_writer_config(R"({
        "name": "pgsql",
        "command": ["/usr/local/lib/pg-hook", "--cluster", "main"],
        "events": ["prepare-backup", "freeze", "thaw", "abort"],
        "timeout_seconds": 30,
        "timeouts": {"freeze": 5, "thaw": 2.5},
        "environment": {"PGHOST": "/run/postgresql"}
    })",
                                           "/etc/vmshadow/writers.d/pgsql.json");
    ASSERT_TRUE(config) << config.error().message();
    EXPECT_EQ(config->name, "pgsql");
    EXPECT_EQ(config->command.size(), 3u);
    EXPECT_TRUE(config->wants(Event::freeze));
    EXPECT_FALSE(config->wants(Event::identify));
    EXPECT_EQ(config->timeout_for(Event::freeze), 5s);
    EXPECT_EQ(config->timeout_for(Event::thaw), 2500ms);
    EXPECT_EQ(config->timeout_for(Event::abort), 30s);
    EXPECT_EQ(config->environment.at("PGHOST"), "/run/postgresql");
}

TEST(ExecWriterConfig, MinimalConfigWantsEveryEventWithTheDefaultTimeout) {
    auto config = parse_exec_writer_config(R"({"name": "a", "command": "/bin/true"})", "a.json");
    ASSERT_TRUE(config);
    EXPECT_EQ(config->command, std::vector<std::string>{"/bin/true"});
    for (Event e : kAllEvents) EXPECT_TRUE(config->wants(e));
    EXPECT_EQ(config->timeout_for(Event::freeze), 60s);
}

TEST(ExecWriterConfig, MistakesAreRejectedWithTheFileName) {
    for (const char* bad : {
             R"({"command": "/bin/true"})",
             R"({"name": "a"})",
             R"({"name": "a b", "command": "/bin/true"})",
             R"({"name": "a", "command": []})",
             R"({"name": "a", "command": "/bin/true", "events": ["froze"]})",
             R"({"name": "a", "command": "/bin/true", "timeouts": {"freeze": -1}})",
             R"({"name": "a", "command": "/bin/true", "timeout_seconds": "ten"})",
             R"([1, 2])",
             R"(not json)",
         }) {
        auto config = parse_exec_writer_config(bad, "/etc/x/bad.json");
        ASSERT_FALSE(config) << bad;
        EXPECT_EQ(config.error().kind(), ErrorKind::invalid_argument) << bad;
        EXPECT_NE(config.error().message().find("/etc/x/bad.json"), std::string::npos) << bad;
    }
}

TEST(ExecWriterConfig, DirectoryIsReadInNameOrderAndOtherFilesAreIgnored) {
    TempDir dir;
    dir.write("b.json", R"({"name": "second", "command": "/bin/true"})");
    dir.write("a.json", R"({"name": "first", "command": "/bin/true"})");
    dir.write("README", "not a config");
    dir.write("c.json.disabled", "{");
    auto configs = load_exec_writer_configs(dir.path());
    ASSERT_TRUE(configs) << configs.error().message();
    ASSERT_EQ(configs->size(), 2u);
    EXPECT_EQ((*configs)[0].name, "first");
    EXPECT_EQ((*configs)[1].source, dir / "b.json");
}

TEST(ExecWriterConfig, MissingDirectoryMeansNoExecWriters) {
    auto configs = load_exec_writer_configs("/nonexistent/writers.d");
    ASSERT_TRUE(configs);
    EXPECT_TRUE(configs->empty());
}

TEST(ExecWriterConfig, OneBadFileFailsTheWholeDirectory) {
    TempDir dir;
    dir.write("a.json", R"({"name": "first", "command": "/bin/true"})");
    dir.write("b.json", R"({"name": "first", "command": "/bin/false"})");
    auto configs = load_exec_writer_configs(dir.path());
    ASSERT_FALSE(configs);
    EXPECT_NE(configs.error().message().find("defined twice"), std::string::npos);
}

}  // namespace
}  // namespace vmshadow::vss
