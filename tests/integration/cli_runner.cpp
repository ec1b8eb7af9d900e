// SPDX-License-Identifier: MIT
#include "integration/cli_runner.h"

#include <fcntl.h>
#include <spawn.h>

extern char** environ;

namespace vmshadow::testing {

lab::ProcessOutput run_vmshadow(const std::vector<std::string>& args) {
    std::vector<std::string> argv{VMSHADOW_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    auto run = lab::run_process(argv);
    if (!run) return lab::ProcessOutput{-1, "", run.error().message()};
    return *run;
}

pid_t start_vmshadow_in_own_group(const std::vector<std::string>& args, const std::string& output) {
    std::vector<std::string> strings{VMSHADOW_BINARY};
    strings.insert(strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : strings) argv.push_back(s.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    pid_t pid = -1;
    if (posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    return pid;
}

}  // namespace vmshadow::testing
