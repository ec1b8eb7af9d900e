// SPDX-License-Identifier: MIT
// qemu-nbd as vmshadow runs it (issue 19 item 4): tied to the vmshadow process, not to the
// thread that started it; stopped and reaped within a bounded time; its /tmp directory
// removed when it stops, or by the next start after a vmshadow was killed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/process.h"
#include "engine/nbd_image.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct TempImage {
    fs::path dir;
    std::string image;
    TempImage() {
        std::string tmpl = (fs::temp_directory_path() / "vmshadow-nbdtest-XXXXXX").string();
        dir = ::mkdtemp(tmpl.data());
        image = (dir / "disk.raw").string();
        std::ofstream(image).close();
        fs::resize_file(image, 1 << 20);
    }
    ~TempImage() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
};

bool becomes(const std::function<bool()>& condition, std::chrono::milliseconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(20ms))
        if (condition()) return true;
    return condition();
}

TEST(QemuNbdServer, AServerStartedOnAWorkerThreadOutlivesTheThread) {
    TempImage t;
    std::unique_ptr<QemuNbdServer> server;
    std::thread([&] {
        auto started = QemuNbdServer::start({t.image, "raw", true, 1});
        ASSERT_TRUE(started) << started.error().message();
        server = std::move(*started);
    }).join();
    ASSERT_TRUE(server);
    std::this_thread::sleep_for(300ms);  // a signal tied to the thread would have landed
    auto connection = NbdConnection::connect_unix(server->socket(), false);
    ASSERT_TRUE(connection) << connection.error().message();
    EXPECT_EQ((*connection)->size(), 1u << 20);
    connection->reset();
    fs::path dir = fs::path(server->socket()).parent_path();
    EXPECT_TRUE(server->stop());
    EXPECT_FALSE(fs::exists(dir));
    EXPECT_TRUE(processes_with_argument("--socket=" + dir.string() + "/").empty());
}

TEST(QemuNbdServer, AKilledVmshadowsServerDiesAndTheNextStartRemovesItsDirectory) {
    TempImage t;
    std::string socket_file = (t.dir / "socket").string();
    pid_t vmshadow = ::fork();
    ASSERT_GE(vmshadow, 0);
    if (vmshadow == 0) {
        auto server = QemuNbdServer::start({t.image, "raw", true, 1});
        // Killed once it serves.
        if (server && NbdConnection::connect_unix((*server)->socket(), false))
            std::ofstream(socket_file) << (*server)->socket() << "\n";
        ::kill(::getpid(), SIGKILL);
    }
    ASSERT_EQ(::waitpid(vmshadow, nullptr, 0), vmshadow);
    std::string socket;
    std::ifstream(socket_file) >> socket;
    ASSERT_FALSE(socket.empty());
    fs::path dir = fs::path(socket).parent_path();
    EXPECT_TRUE(becomes(
        [&] { return processes_with_argument("--socket=" + dir.string() + "/").empty(); }, 5s))
        << "qemu-nbd outlived the vmshadow that started it";
    EXPECT_TRUE(fs::exists(dir));

    auto next = QemuNbdServer::start({t.image, "raw", true, 1});
    ASSERT_TRUE(next) << next.error().message();
    EXPECT_FALSE(fs::exists(dir)) << "the killed run's directory was left";
    EXPECT_TRUE((*next)->stop());
}

TEST(QemuNbdServer, AStartLeavesTheDirectoryOfARunningVmshadow) {
    TempImage t;
    auto first = QemuNbdServer::start({t.image, "raw", true, 1});
    ASSERT_TRUE(first) << first.error().message();
    auto second = QemuNbdServer::start({t.image, "raw", true, 1});
    ASSERT_TRUE(second) << second.error().message();
    EXPECT_TRUE(fs::exists(fs::path((*first)->socket()).parent_path()));
    auto connection = NbdConnection::connect_unix((*first)->socket(), false);
    EXPECT_TRUE(connection) << connection.error().message();
}

}  // namespace
}  // namespace vmshadow::engine
