// SPDX-License-Identifier: MIT
// Replica's acceptance tests (issue 20) on two independent libvirt hosts on this machine
// (replica_fixture.h): a real guest on host A with its workload writing through every cycle,
// replicated by daemon A to daemon B over mutual TLS; every failover, reverse, resync and
// kill checked against the disks' real bytes (qemu-img compare).
#include <sys/wait.h>

#include "integration/replica_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;

const std::vector<std::string> kTargets{"vda", "vdb"};

// Waits until a cycle is halfway: the daemon's log says it paused at `step` (the test hook,
// common/test_hook.h), or — should that hook not be called — the replica host has begun
// writing the cycle's new layer (`layer` exists). The caller then kills a daemon.
bool wait_mid_cycle(const DaemonProcess& d, const std::string& step, const fs::path& layer,
                    std::chrono::seconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(50ms))
        if (d.read_log().find("paused at " + step) != std::string::npos || fs::exists(layer))
            return true;
    return false;
}

// `vmshadow replica cycle VM --wait` running in its own process group, reaped on destruction.
struct BackgroundCycle {
    pid_t pid = -1;
    BackgroundCycle(const ReplicaSide& side, const std::string& vm, const fs::path& output) {
        pid = start_vmshadow_in_own_group(
            {"--daemon", side.daemon_url(), "replica", "cycle", vm, "--wait"}, output.string());
    }
    ~BackgroundCycle() {
        if (pid <= 0) return;
        ::kill(-pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
    }
    // The CLI's exit status once it ended by itself (within `limit`), else -1.
    int wait(std::chrono::seconds limit) {
        for (auto end = std::chrono::steady_clock::now() + limit;
             std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(200ms)) {
            int status = 0;
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
        }
        return -1;
    }
};

// Every point the replica lists is whole: each layer of it passes `qemu-img check`.
::testing::AssertionResult points_intact(const ReplicaSide& side, const std::string& vm,
                                         const fs::path& store) {
    for (const auto& p : side.points(vm)) {
        for (const auto& t : kTargets) {
            fs::path layer =
                store / ("p" + std::to_string(p.at("seq").get<int>()) + "-" + t + ".qcow2");
            auto r = lab::run_process({"qemu-img", "check", "-U", layer.string()});
            if (!r || r->exit_code != 0)
                return ::testing::AssertionFailure()
                       << layer << ": " << (r ? r->out + r->err : r.error().message());
        }
    }
    return ::testing::AssertionSuccess();
}

}  // namespace

class ReplicaAcceptance : public ReplicaTest {
  public:
    // The replica and primary hold the same bytes: the primary's guest is suspended, one
    // cycle runs, and each disk is compared with the new latest point on the replica host.
    void expect_equal_now(const ReplicaSide& primary, const ReplicaSide& replica,
                          const std::string& vm) {
        suspend(primary, vm);
        try {
            cycle(primary, vm);
        } catch (...) {
            resume(primary, vm);
            throw;
        }
        auto seq = latest_seq(replica, vm);
        auto files = primary.disk_files(vm);
        for (const auto& t : kTargets)
            EXPECT_TRUE(same_content(files.at(t), point_layer(replica, vm, seq, t)))
                << t << " at point " << seq;
        resume(primary, vm);
    }
    std::string state_of(const ReplicaSide& side, const std::string& vm, const std::string& role) {
        auto e = side.replica_entry(vm, role);
        return e.is_null() ? "none" : e.value("state", "?") + " (" + e.dump() + ")";
    }
};

// Test failover starts VM-test from a point on host B, with its NIC's link down, while cycles
// of the running VM keep succeeding; stop-test removes only that copy.
TEST_F(ReplicaAcceptance, TestFailoverBootsThePointWhileCyclesKeepSucceeding) {
    start_both();
    lab::GuestOptions options{
        .workload = true, .data_disks = {{lab::DataDisk::Kind::blank, "64M"}}, .nic = true};
    auto guest = lab::LabGuest::create(options, current_test_name());
    ASSERT_TRUE(guest) << guest.error().message();
    guests.push_back(std::move(*guest));
    lab::LabGuest& g = guests.back();
    ASSERT_TRUE(g.start());
    ASSERT_TRUE(g.wait_for_agent());
    const std::string vm = g.name();

    enable_and_copy(vm);
    cycle(a, vm);
    auto tested = latest_seq(b, vm);
    b.cli_ok({"replica", "test-failover", vm, "--wait"});
    const std::string test_vm = vm + "-test";
    ASSERT_TRUE(b.domain_exists(test_vm));
    EXPECT_TRUE(b.agent_answers(test_vm, 180s)) << "the test copy did not boot";
    auto xml = b.virsh({"dumpxml", test_vm}).out;
    EXPECT_NE(xml.find("<link state='down'/>"), std::string::npos) << xml;
    EXPECT_FALSE(a.domain_exists(test_vm)) << "the test copy is host B's only";

    // Replication goes on meanwhile: two more points while the test copy runs.
    cycle(a, vm);
    cycle(a, vm);
    EXPECT_GE(latest_seq(b, vm), tested + 2);
    EXPECT_EQ(a.replica_entry(vm, "primary").value("state", ""), "normal")
        << state_of(a, vm, "primary");

    b.cli_ok({"replica", "stop-test", vm});
    EXPECT_FALSE(b.domain_exists(test_vm));
    fs::path store = store_folder(b, vm);
    for (const auto& t : kTargets) EXPECT_FALSE(fs::exists(store / ("test-" + t + ".qcow2")));
    EXPECT_EQ(a.domain_state(vm), "running");
    EXPECT_TRUE(points_intact(b, vm, store));
    expect_equal_now(a, b, vm);
}

// Planned failover loses no write (the shut-off primary's disks equal the replica's latest
// point); reverse then makes host A the replica and its first cycle sends only what changed
// since the failover; afterwards both sides hold the same bytes.
TEST_F(ReplicaAcceptance, PlannedFailoverThenReverseSendsOnlyChanges) {
    start_both();
    lab::LabGuest& g = boot_guest();
    const std::string vm = g.name();
    auto initial = enable_and_copy(vm);
    cycle(a, vm);

    a.cli_ok({"replica", "planned-failover", vm, "--wait"});
    EXPECT_EQ(a.domain_state(vm), "shut off");
    ASSERT_EQ(b.domain_state(vm), "running");
    auto seq = latest_seq(b, vm);
    // No write lost: the shut-off primary's disks hash-equal the replica's latest point.
    for (const auto& t : kTargets)
        EXPECT_EQ(disk_sha256(g.disk_path(t)), disk_sha256(point_layer(b, vm, seq, t))) << t;
    EXPECT_TRUE(b.agent_answers(vm, 180s)) << "the failed-over VM did not boot on host B";

    b.cli_ok({"replica", "reverse", vm, "--wait"});
    EXPECT_FALSE(a.domain_exists(vm)) << "host A's copy must not be startable by accident";
    cycle(b, vm);
    // Everything the new link sent so far (a scheduled first cycle included): changes only.
    auto sent = b.replica_entry(vm, "primary").value("bytes_sent", 0ull);
    std::cout << "[ info     ] initial copy " << initial << " bytes, reverse cycles " << sent
              << " bytes\n";
    EXPECT_LT(sent, initial / 2) << "the reverse cycles sent " << sent
                                 << " bytes; the initial copy was " << initial;
    EXPECT_EQ(b.replica_entry(vm, "primary").value("state", ""), "normal")
        << state_of(b, vm, "primary");
    expect_equal_now(b, a, vm);
}

// Unplanned failover to an earlier point k: the VM on host B starts from exactly the bytes
// the primary had when point k was read (captured with the guest suspended).
TEST_F(ReplicaAcceptance, UnplannedFailoverToPointKEqualsThePrimaryAtK) {
    start_both();
    lab::LabGuest& g = boot_guest();
    const std::string vm = g.name();
    enable_and_copy(vm, {"--history", "8"});
    cycle(a, vm);

    suspend(a, vm);
    cycle(a, vm);
    auto k = latest_seq(b, vm);
    std::map<std::string, fs::path> at_k;
    for (const auto& t : kTargets) at_k[t] = capture(g.disk_path(t), "at-k-" + t + ".qcow2");
    resume(a, vm);
    write_random_blocks(g, 1u << 20);
    cycle(a, vm);
    cycle(a, vm);
    ASSERT_GT(latest_seq(b, vm), k);

    // Host A is lost: its daemon killed, its VM gone.
    a.daemon->kill_daemon();
    (void)a.virsh({"destroy", vm});
    for (const auto& t : kTargets)
        EXPECT_TRUE(same_content(point_layer(b, vm, k, t), at_k[t])) << t << " of point " << k;

    b.cli_ok({"replica", "failover", vm, "--point", std::to_string(k), "--wait", "--yes"});
    ASSERT_EQ(b.domain_state(vm), "running");
    EXPECT_TRUE(b.agent_answers(vm, 180s)) << "the failed-over VM did not boot";
    for (const auto& [t, file] : b.disk_files(vm)) {
        auto chain = lab::run_process({"qemu-img", "info", "-U", "--backing-chain", file});
        ASSERT_TRUE(chain);
        EXPECT_NE(chain->out.find(point_layer(b, vm, k, t).filename().string()), std::string::npos)
            << t << " does not run on point " << k << ":\n"
            << chain->out;
    }
    EXPECT_EQ(b.replica_entry(vm, "replica").value("state", ""), "failed-over")
        << state_of(b, vm, "replica");
    b.cli_ok({"replica", "commit", vm, "--yes"});
    EXPECT_EQ(b.points(vm).size(), 1u) << b.points(vm).dump();
}

// A deleted checkpoint of the replica's chain on the primary: change tracking cannot be
// followed, the VM goes resync-required, and the resync sends only the blocks that differ
// (< 10 % of the disks for ~1 % changed); the replica then equals the primary.
TEST_F(ReplicaAcceptance, DeletedCheckpointLeadsToAResyncSendingOnlyTheDifference) {
    start_both();
    lab::LabGuest& g = boot_guest();
    const std::string vm = g.name();
    enable_and_copy(vm);
    cycle(a, vm);

    int deleted = 0;
    for (const auto& c : a.checkpoints(vm)) {
        if (c.rfind("vmshadow-", 0) != 0) continue;
        EXPECT_EQ(a.virsh({"checkpoint-delete", vm, c}).exit_code, 0) << c;
        ++deleted;
    }
    ASSERT_GT(deleted, 0) << "no checkpoint of the replica's chain on the primary";
    write_random_blocks(g, kDiskBytes / 100);

    std::uint64_t sent = 0;
    bool done = false;
    std::string states;
    for (int i = 0; i < 3 && !done; ++i) {
        auto before = a.replica_entry(vm, "primary").value("bytes_sent", 0ull);
        auto r = a.cli({"replica", "cycle", vm, "--wait"});
        auto entry = a.replica_entry(vm, "primary");
        sent += entry.value("bytes_sent", 0ull) - before;
        states += entry.value("state", "?") + " ";
        done = r.exit_code == 0 && entry.value("state", "") == "normal";
    }
    std::cout << "[ info     ] resync: " << sent << " bytes for " << kDiskBytes / 100
              << " changed; link states after each cycle: " << states << "\n";
    ASSERT_TRUE(done) << "no successful resync in 3 cycles; states: " << states;
    EXPECT_NE(a.daemon->read_log().find("cycle resync"), std::string::npos)
        << "no cycle was a resync (compare block hashes, send what differs):\n"
        << a.log_tail();
    EXPECT_LT(sent, kDiskBytes / 10) << "the resync sent " << sent << " bytes";
    EXPECT_GT(sent, kDiskBytes / 100 / 2) << "the changed blocks must have been sent";
    expect_equal_now(a, b, vm);
}

// A replicated disk grown on the primary (virsh blockresize): the primary announces the VM
// again, the replica takes a full copy (the layers' sizes changed) instead of refusing every
// cycle, and then equals the primary at the new size.
TEST_F(ReplicaAcceptance, GrownDiskIsAnnouncedAgainAndReplicated) {
    start_both();
    lab::LabGuest& g = boot_guest();
    const std::string vm = g.name();
    enable_and_copy(vm);
    ASSERT_EQ(a.virsh({"blockresize", vm, "vdb", "96M"}).exit_code, 0);
    write_random_blocks(g, 1u << 20);
    cycle(a, vm);
    EXPECT_EQ(a.replica_entry(vm, "primary").value("state", ""), "normal")
        << state_of(a, vm, "primary");
    // Its newest layer has the new size (qemu-img compare alone would pass a shorter copy
    // whose missing tail the primary holds as zeros).
    fs::path vdb = point_layer(b, vm, latest_seq(b, vm), "vdb");
    auto info = lab::run_process({"qemu-img", "info", "-U", "--output=json", vdb.string()});
    ASSERT_TRUE(info && info->exit_code == 0) << vdb;
    EXPECT_EQ(nlohmann::json::parse(info->out).value("virtual-size", 0ull), 96ull << 20)
        << info->out;
    expect_equal_now(a, b, vm);
}

// The kill tests' start: a replicated guest with one cycle done, `side`'s daemon restarted to
// hold for a minute at `step` of the next cycle, and 48 MiB written so that cycle has chunks.
class ReplicaKill : public ReplicaAcceptance {
  protected:
    struct HeldCycle {
        std::string vm;
        std::uint64_t before = 0;  // the replica's newest point before the cycle
        nlohmann::json points_before;
        fs::path next_layer;  // the layer the held cycle writes on host B
    };
    HeldCycle hold_next_cycle_at(ReplicaSide& side, const std::string& step) {
        start_both();
        lab::LabGuest& g = boot_guest();
        HeldCycle held;
        held.vm = g.name();
        enable_and_copy(held.vm);
        cycle(a, held.vm);
        held.before = latest_seq(b, held.vm);
        held.points_before = b.points(held.vm);
        side.daemon->stop_daemon();
        side.daemon->start_daemon(
            {"VMSHADOW_TEST_PAUSE_AT=" + step, "VMSHADOW_TEST_PAUSE_MS=60000"});
        write_random_blocks(g, 48u << 20);
        held.next_layer = point_layer(b, held.vm, held.before + 1, "vda");
        return held;
    }
};

// kill -9 of the primary's daemon halfway through a cycle (after a chunk was sent, before the
// commit): the replica keeps its points unharmed, the cut cycle is not one of them, the
// restarted primary shows the failure, and its next cycle completes.
TEST_F(ReplicaKill, KillOfThePrimaryDaemonMidCycleDamagesNothing) {
    auto [vm, before, points_before, next_layer] = hold_next_cycle_at(a, "replica-chunk-sent");
    {
        BackgroundCycle running(a, vm, dir / "cycle-a.out");
        ASSERT_TRUE(wait_mid_cycle(*a.daemon, "replica-chunk-sent", next_layer, 180s))
            << a.log_tail();
        a.daemon->kill_daemon();
    }
    EXPECT_EQ(b.points(vm), points_before) << "a cut cycle became a point";
    EXPECT_TRUE(points_intact(b, vm, store_folder(b, vm)));

    a.daemon->start_daemon();
    // The restarted primary counts the cycle its own death cut: warning until one succeeds.
    auto state = a.replica_entry(vm, "primary");
    EXPECT_EQ(state.value("state", ""), "warning") << state.dump();
    EXPECT_NE(state.value("last_error", std::string()).find("cut off"), std::string::npos)
        << state.dump();
    cycle(a, vm);
    EXPECT_GT(latest_seq(b, vm), before);
    EXPECT_EQ(a.replica_entry(vm, "primary").value("state", ""), "normal")
        << state_of(a, vm, "primary");
    expect_equal_now(a, b, vm);
}

// kill -9 of the replica host's daemon while it applies a cycle (for the primary: the
// connection cut): the primary shows the failed cycle meanwhile; the restarted replica drops
// the half-written layer, keeps every point, and the next cycle completes.
TEST_F(ReplicaKill, KillOfTheReplicaDaemonMidCycleDamagesNothing) {
    auto [vm, before, points_before, next_layer] = hold_next_cycle_at(b, "replica-chunk-applied");
    fs::path store = store_folder(b, vm);
    {
        BackgroundCycle running(a, vm, dir / "cycle-a.out");
        ASSERT_TRUE(wait_mid_cycle(*b.daemon, "replica-chunk-applied", next_layer, 180s))
            << b.log_tail();
        b.daemon->kill_daemon();
        EXPECT_NE(running.wait(120s), 0) << "a cycle whose replica died must fail";
    }
    auto state = a.replica_entry(vm, "primary");
    EXPECT_TRUE(state.value("state", "") == "warning" || state.value("state", "") == "critical")
        << state.dump();
    EXPECT_FALSE(state.value("last_error", std::string()).empty()) << state.dump();

    b.daemon->start_daemon();
    EXPECT_EQ(b.points(vm), points_before) << "a cut cycle became a point";
    EXPECT_TRUE(points_intact(b, vm, store));
    for (const auto& e : fs::directory_iterator(store)) {
        auto name = e.path().filename().string();
        if (name.ends_with(".qcow2") && name.rfind("p", 0) == 0) {
            EXPECT_LE(std::stoull(name.substr(1)), before) << "leftover layer " << name;
        }
    }
    cycle(a, vm);
    EXPECT_GT(latest_seq(b, vm), before);
    expect_equal_now(a, b, vm);
}

// A primary whose certificate comes from another CA is refused by the replica host, and a
// replica host whose certificate the primary cannot verify is refused by the primary: both
// errors name the certificate; no link and no store are made. (A daemon whose own
// certificate does not chain to its own [replica] ca does not start: the unit tests.)
TEST_F(ReplicaAcceptance, UntrustedCertificateIsRefusedNamingIt) {
    fs::path other_ca = dir / "other-ca";
    ASSERT_EQ(run_vmshadow({"cert", "ca", other_ca.string(), "--name", "other CA"}).exit_code, 0);
    auto issued = run_vmshadow({"cert", "issue", "--ca", other_ca.string(), "--name", "hostc",
                                "--ip", "127.0.0.1", (dir / "hostc").string()});
    ASSERT_EQ(issued.exit_code, 0) << issued.err;
    // Host A presents CN=hostc (the other CA) and trusts both CAs: host B's certificate
    // verifies, its own does not verify on host B.
    fs::path both = dir / "both-cas.crt";
    {
        std::ofstream out(both);
        for (const auto& f : {other_ca / "ca.crt", ca / "ca.crt"}) {
            std::ifstream in(f);
            out << in.rdbuf();
        }
    }
    a.cert_dir = dir / "hostc";
    a.write_config(dir / "scratch-a", "CN=hostb", both.string());
    start_both();
    auto guest = lab::LabGuest::create({}, current_test_name());  // defined, never started
    ASSERT_TRUE(guest) << guest.error().message();
    guests.push_back(std::move(*guest));
    const std::string vm = guests.back().name();

    auto refused = a.cli({"replica", "enable", vm, "--to", b.endpoint(), "--interval", "5m"});
    EXPECT_NE(refused.exit_code, 0) << refused.out;
    EXPECT_NE((refused.err + refused.out).find("certificate"), std::string::npos)
        << refused.err << refused.out;
    // Host B logs the refusal from its own thread, maybe after host A has its answer.
    auto logged = [&] { return b.daemon->read_log().find("CN=hostc") != std::string::npos; };
    for (int i = 0; i < 50 && !logged(); ++i) std::this_thread::sleep_for(200ms);
    EXPECT_TRUE(logged()) << "host B's log must name the refused certificate:\n"
                          << b.log_tail() << "\nhost A said: " << refused.err << refused.out;

    // Host A trusts only the other CA: host B's certificate (CN=hostb) is the untrusted one.
    a.daemon->stop_daemon();
    a.write_config(dir / "scratch-a", "CN=hostb", (other_ca / "ca.crt").string());
    a.daemon->start_daemon();
    refused = a.cli({"replica", "enable", vm, "--to", b.endpoint(), "--interval", "5m"});
    EXPECT_NE(refused.exit_code, 0) << refused.out;
    EXPECT_NE((refused.err + refused.out).find("CN=hostb"), std::string::npos)
        << refused.err << refused.out;

    EXPECT_TRUE(a.replica_entry(vm, "primary").is_null());
    EXPECT_TRUE(fs::is_empty(b.storage)) << "a refused primary made a store";
}

}  // namespace vmshadow::testing
