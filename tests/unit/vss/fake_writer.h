// SPDX-License-Identifier: MIT
#pragma once
// FakeWriter and FakeProvider: scriptable test doubles that log every call into one
// shared EventLog, so tests can check the order of events across writers and provider.

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vss/provider.h"
#include "vss/writer.h"

namespace vmshadow::vss::testing {

class EventLog {
  public:
    void add(std::string entry) {
        std::lock_guard lock(mutex_);
        entries_.push_back(std::move(entry));
    }
    std::vector<std::string> entries() const {
        std::lock_guard lock(mutex_);
        return entries_;
    }
    int count(const std::string& entry) const {
        std::lock_guard lock(mutex_);
        int n = 0;
        for (const auto& e : entries_) n += e == entry;
        return n;
    }
    // Position of the first `entry`, or -1.
    int index_of(const std::string& entry) const {
        std::lock_guard lock(mutex_);
        for (std::size_t i = 0; i < entries_.size(); ++i) {
            if (entries_[i] == entry) return static_cast<int>(i);
        }
        return -1;
    }

  private:
    mutable std::mutex mutex_;
    std::vector<std::string> entries_;
};

// Blocks until the coordinator gives up on the call (or 10 s pass).
inline void hang_until_stopped(const EventDeadline& deadline) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!deadline.stop_requested() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

struct Behaviour {
    std::optional<Veto> veto;
    bool hang = false;
    bool throws = false;
    std::chrono::milliseconds sleep{0};
};

class FakeWriter : public Writer {
  public:
    FakeWriter(std::string id, std::shared_ptr<EventLog> log, int components = 1)
        : id_(std::move(id)), log_(std::move(log)), components_(components) {}

    std::string id() const override { return id_; }
    std::string name() const override { return "fake " + id_; }

    void veto_at(Event event, FailureCode code = FailureCode::nonretryable,
                 std::string message = "vetoed by test") {
        behaviour_[event].veto = Veto{code, std::move(message)};
    }
    void hang_at(Event event) { behaviour_[event].hang = true; }
    void throw_at(Event event) { behaviour_[event].throws = true; }
    void sleep_at(Event event, std::chrono::milliseconds ms) { behaviour_[event].sleep = ms; }
    // Runs inside every event, after logging (e.g. to set a backup stamp).
    std::function<void(EventContext&)> on_event;
    // What identify reports; defaults to `components` components "vm/<id>-<n>".
    std::optional<WriterMetadata> metadata;

    int calls(Event event) const {
        std::lock_guard lock(mutex_);
        auto it = calls_.find(event);
        return it == calls_.end() ? 0 : it->second;
    }
    EventContext last_context(Event event) const {
        std::lock_guard lock(mutex_);
        return contexts_.at(event);
    }

    std::expected<WriterMetadata, Veto> identify(EventContext& context) override {
        if (auto result = handle(context); !result) return std::unexpected(result.error());
        if (metadata) return *metadata;
        WriterMetadata m{id_, name(), RestoreMethod::stop_restore_start, {}};
        for (int n = 0; n < components_; ++n) {
            Component c;
            c.logical_path = "vm";
            c.name = id_ + "-" + std::to_string(n);
            c.files.push_back(
                {FileKind::disk, "/var/lib/images/" + c.name + ".qcow2", "vda", "qcow2", 1 << 20});
            m.components.push_back(std::move(c));
        }
        return m;
    }
    WriterResult prepare_backup(EventContext& c) override { return handle(c); }
    WriterResult prepare_snapshot(EventContext& c) override { return handle(c); }
    WriterResult freeze(EventContext& c) override { return handle(c); }
    WriterResult thaw(EventContext& c) override { return handle(c); }
    WriterResult post_snapshot(EventContext& c) override { return handle(c); }
    WriterResult backup_complete(EventContext& c) override { return handle(c); }
    WriterResult abort(EventContext& c) override { return handle(c); }
    WriterResult pre_restore(EventContext& c) override { return handle(c); }
    WriterResult post_restore(EventContext& c) override { return handle(c); }

  private:
    WriterResult handle(EventContext& context) {
        Behaviour behaviour;
        {
            std::lock_guard lock(mutex_);
            ++calls_[context.event];
            contexts_[context.event] = context;
            if (auto it = behaviour_.find(context.event); it != behaviour_.end()) {
                behaviour = it->second;
            }
        }
        log_->add(id_ + ":" + std::string(event_name(context.event)));
        if (behaviour.sleep.count() > 0) std::this_thread::sleep_for(behaviour.sleep);
        if (behaviour.hang) hang_until_stopped(context.deadline);
        if (behaviour.throws) throw std::runtime_error("boom");
        if (on_event) on_event(context);
        if (behaviour.veto) return std::unexpected(*behaviour.veto);
        return {};
    }

    std::string id_;
    std::shared_ptr<EventLog> log_;
    int components_;
    mutable std::mutex mutex_;
    std::map<Event, Behaviour> behaviour_;
    std::map<Event, int> calls_;
    std::map<Event, EventContext> contexts_;
};

class FakeProvider : public Provider {
  public:
    explicit FakeProvider(std::shared_ptr<EventLog> log) : log_(std::move(log)) {}

    std::string name() const override { return "fake"; }

    std::optional<Error> fail_create;
    bool hang_create = false;
    std::chrono::milliseconds create_sleep{0};
    std::optional<SnapshotRequest> last_request;

    Status prepare_snapshot_set(const SnapshotRequest&) override {
        log_->add("provider:prepare");
        return {};
    }
    Result<SnapshotSet> create_snapshot_set(const SnapshotRequest& request) override {
        log_->add("provider:create");
        {
            std::lock_guard lock(mutex_);
            last_request = request;
        }
        if (create_sleep.count() > 0) std::this_thread::sleep_for(create_sleep);
        if (hang_create) hang_until_stopped(request.deadline);
        if (fail_create) return std::unexpected(*fail_create);
        SnapshotSet set{request.backup_id, std::chrono::system_clock::now(), {}};
        for (const auto& c : request.components) set.snapshots.push_back({c.key, {}});
        return set;
    }
    Status finish_snapshot_set(const SnapshotSet&) override {
        log_->add("provider:finish");
        return {};
    }
    Status abort_snapshot_set(const std::string&) override {
        log_->add("provider:abort");
        return {};
    }
    SnapshotRequest request() const {
        std::lock_guard lock(mutex_);
        return *last_request;
    }

  private:
    std::shared_ptr<EventLog> log_;
    mutable std::mutex mutex_;
};

}  // namespace vmshadow::vss::testing
