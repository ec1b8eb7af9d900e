// SPDX-License-Identifier: MIT
// main() of s3_tests: loads the Ceph lab's env file (tests/lab/ceph-rgw.sh writes it; ctest
// passes its path as VMSHADOW_S3_LAB_ENV) into the environment before any test runs, so the
// tests and every vmshadow process they start see the lab's endpoint and keys. The lab's
// ports are chosen when it comes up, after CMake ran: they cannot be in ctest's ENVIRONMENT.
// Without the file (a run by hand against the dev cluster) the environment is used as is.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace {

void load_lab_env() {
    const char* path = getenv("VMSHADOW_S3_LAB_ENV");
    if (path == nullptr || *path == '\0') return;
    std::ifstream in(path);
    if (!in) {
        std::fprintf(stderr, "s3_tests: %s is not readable: is the lab up (ceph-rgw.sh up)?\n",
                     path);
        return;
    }
    std::string line;
    while (std::getline(in, line)) {
        auto eq = line.find('=');
        if (line.empty() || line[0] == '#' || eq == std::string::npos) continue;
        // The lab wins over a developer's AWS_* for another cluster.
        setenv(line.substr(0, eq).c_str(), line.substr(eq + 1).c_str(), 1);
    }
}

}  // namespace

int main(int argc, char** argv) {
    load_lab_env();
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
