// SPDX-License-Identifier: MIT
#include "cli/app.h"

int main(int argc, char** argv) {
    return vmshadow::cli::run_cli(argc, argv);
}
