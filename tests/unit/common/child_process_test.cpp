// SPDX-License-Identifier: MIT
#include "common/child_process.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cerrno>
#include <thread>

namespace vmshadow {
namespace {

using namespace std::chrono_literals;

void expect_no_children_left() {
    errno = 0;
    EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
}

TEST(RunCommand, CommandIgnoringSigtermIsKilledAfterTheGrace) {
    auto started = std::chrono::steady_clock::now();
    auto result = run_command({"/bin/sh", "-c", "trap '' TERM; sleep 1000 & wait; sleep 1000"},
                              {.environment = std::vector<std::string>{"PATH=/usr/bin:/bin"},
                               .deadline = started + 200ms,
                               .kill_grace = 200ms});
    ASSERT_TRUE(result);
    EXPECT_EQ(result->ending, CommandResult::Ending::timed_out);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
    expect_no_children_left();
}

TEST(RunCommand, StopRequestEndsTheCommandEarly) {
    std::stop_source stop;
    std::thread stopper([&] {
        std::this_thread::sleep_for(100ms);
        stop.request_stop();
    });
    auto result =
        run_command({"sleep", "1000"}, {.deadline = std::chrono::steady_clock::now() + 60s,
                                        .stop = stop.get_token(),
                                        .kill_grace = 200ms});
    stopper.join();
    ASSERT_TRUE(result);
    EXPECT_EQ(result->ending, CommandResult::Ending::cancelled);
}

TEST(RunCommand, CapturesStdoutAndStderrAndTheExitCode) {
    auto result = run_command({"/bin/sh", "-c", "echo out; echo err >&2; exit 4"},
                              {.environment = std::vector<std::string>{}});
    ASSERT_TRUE(result);
    EXPECT_EQ(result->ending, CommandResult::Ending::exited);
    EXPECT_EQ(result->exit_code, 4);
    EXPECT_EQ(result->stdout_text, "out\n");
    EXPECT_EQ(result->stderr_text, "err\n");
}

TEST(RunCommand, InheritsTheEnvironmentUnlessGivenOne) {
    ::setenv("VMSHADOW_RUN_COMMAND_TEST", "here", 1);
    auto inherited = run_command({"/bin/sh", "-c", "echo $VMSHADOW_RUN_COMMAND_TEST"});
    ASSERT_TRUE(inherited);
    EXPECT_EQ(inherited->stdout_text, "here\n");
    auto own = run_command({"/bin/sh", "-c", "echo x$VMSHADOW_RUN_COMMAND_TEST"},
                           {.environment = std::vector<std::string>{}});
    ASSERT_TRUE(own);
    EXPECT_EQ(own->stdout_text, "x\n");
    ::unsetenv("VMSHADOW_RUN_COMMAND_TEST");
}

TEST(RunCommand, MissingProgramIsNotFound) {
    auto result = run_command({"vmshadow-no-such-program"});
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().kind(), ErrorKind::not_found);
}

TEST(RunCommand, LastLineSkipsTrailingBlankLines) {
    EXPECT_EQ(last_line_of("a\n  b c \n\n"), "b c");
    EXPECT_EQ(last_line_of(""), "");
}

}  // namespace
}  // namespace vmshadow
