// SPDX-License-Identifier: MIT
#include "cli/interrupt.h"

#include <unistd.h>

#include <atomic>
#include <optional>

namespace vmshadow::cli {
namespace {

// Only what a signal handler may touch: the token (constructed before the handler is
// installed) and lock-free atomics.
std::optional<CancelToken> g_token;
std::atomic<int> g_first_signal{0};

void write_stderr(const char* text, std::size_t length) {
    ssize_t ignored = ::write(STDERR_FILENO, text, length);
    (void)ignored;
}

void on_signal(int signo) {
    int expected = 0;
    if (g_first_signal.compare_exchange_strong(expected, signo)) {
        if (g_token) g_token->request();
        static constexpr char kMessage[] =
            "\nvmshadow: interrupted; stopping cleanly (interrupt again to exit at once)\n";
        write_stderr(kMessage, sizeof kMessage - 1);
        return;
    }
    static constexpr char kMessage[] =
        "\nvmshadow: interrupted again; exiting now (the next run cleans up)\n";
    write_stderr(kMessage, sizeof kMessage - 1);
    ::_exit(128 + signo);
}

}  // namespace

InterruptGuard::InterruptGuard(CancelToken token) {
    g_token.emplace(std::move(token));
    g_first_signal.store(0);
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    // SA_RESTART: the call a signal lands in goes on (code that would fail on EINTR may be
    // the cleanup itself); operations poll the token between steps instead.
    action.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGTERM, &action, &old_term_);
}

InterruptGuard::~InterruptGuard() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
    g_token.reset();
}

int InterruptGuard::signal() const {
    return g_first_signal.load();
}

}  // namespace vmshadow::cli
