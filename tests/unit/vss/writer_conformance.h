// SPDX-License-Identifier: MIT
#pragma once
// WriterConformance: what every Writer implementation must do, as a typed gtest suite
// (STYLE.md: one conformance suite per interface).
//
// To run it for a writer, write a traits type and instantiate the suite in ONE .cpp of
// your test binary (the suite's definitions live in this header):
//
//   struct VmWriterTraits {
//       static std::shared_ptr<vss::Writer> make();        // a writer whose backup succeeds
//       static std::shared_ptr<vss::Provider> make_provider();  // the provider it pairs with
//   };
//   INSTANTIATE_TYPED_TEST_SUITE_P(VmWriter, WriterConformance,
//                                  ::testing::Types<VmWriterTraits>);
//
// The suite checks: a stable, non-empty identity; Identify describes the writer under its
// own id, validly and the same way twice; a whole backup through the Coordinator
// succeeds, twice in a row with the same writer; Abort is harmless before anything, after
// freeze, after completion, and idempotent (twice in a row); every event returns promptly
// (within 5 s) once its deadline has passed; no event throws.

#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include "vss/coordinator.h"
#include "vss/writer.h"

namespace vmshadow::vss::conformance {

inline EventContext context_for(
    Event event, const std::vector<ComponentEntry>& components,
    EventDeadline deadline = EventDeadline::after(std::chrono::seconds(60))) {
    EventContext context;
    context.event = event;
    context.backup_id = "conformance";
    context.vms = {};
    context.components = components;
    context.deadline = std::move(deadline);
    return context;
}

inline std::vector<ComponentEntry> all_components(const WriterMetadata& metadata) {
    std::vector<ComponentEntry> out;
    for (const Component& c : metadata.components) {
        ComponentEntry entry;
        entry.key = metadata.key_of(c);
        out.push_back(entry);
    }
    return out;
}

// Calls `event` directly; fails the test if it throws.
inline WriterResult call(Writer& writer, EventContext& context) {
    WriterResult result;
    EXPECT_NO_THROW(result = deliver(writer, context)) << event_name(context.event);
    return result;
}

}  // namespace vmshadow::vss::conformance

template <typename Traits>
class WriterConformance : public ::testing::Test {
  protected:
    std::shared_ptr<vmshadow::vss::Writer> writer_ = Traits::make();

    vmshadow::vss::WriterMetadata identify() {
        auto context = vmshadow::vss::conformance::context_for(vmshadow::vss::Event::identify, {});
        auto metadata = writer_->identify(context);
        if (!metadata) ADD_FAILURE() << "identify vetoed: " << metadata.error().message;
        return metadata ? *metadata : vmshadow::vss::WriterMetadata{};
    }
    vmshadow::Result<vmshadow::vss::BackupDocument> backup() {
        vmshadow::vss::Coordinator coordinator({writer_}, Traits::make_provider(), {});
        return vmshadow::vss::run_backup(coordinator, {});
    }
};

TYPED_TEST_SUITE_P(WriterConformance);

TYPED_TEST_P(WriterConformance, IdentityIsNonEmptyAndStable) {
    EXPECT_FALSE(this->writer_->id().empty());
    EXPECT_FALSE(this->writer_->name().empty());
    EXPECT_EQ(this->writer_->id(), this->writer_->id());
}

TYPED_TEST_P(WriterConformance, IdentifyDescribesTheWriterUnderItsOwnIdTheSameWayTwice) {
    auto first = this->identify();
    auto second = this->identify();
    EXPECT_EQ(first.writer_id, this->writer_->id());
    EXPECT_TRUE(vmshadow::vss::validate(first));
    EXPECT_EQ(first, second);
}

TYPED_TEST_P(WriterConformance, WholeBackupSucceedsTwiceInARow) {
    for (int round = 0; round < 2; ++round) {
        auto document = this->backup();
        ASSERT_TRUE(document) << "round " << round << ": " << document.error().message();
        ASSERT_EQ(document->results.size(), 1u);
        EXPECT_EQ(document->results[0].state, vmshadow::vss::WriterState::stable);
        EXPECT_TRUE(document->results[0].freeze_window.has_value() || document->components.empty());
    }
}

TYPED_TEST_P(WriterConformance, AbortBeforeAnythingIsHarmless) {
    using namespace vmshadow::vss;
    auto context = conformance::context_for(Event::abort, {});
    EXPECT_TRUE(conformance::call(*this->writer_, context));
}

TYPED_TEST_P(WriterConformance, AbortWhileFrozenSucceedsAndIsIdempotent) {
    using namespace vmshadow::vss;
    auto components = conformance::all_components(this->identify());
    for (Event event : {Event::prepare_backup, Event::prepare_snapshot, Event::freeze}) {
        auto context = conformance::context_for(event, components);
        ASSERT_TRUE(conformance::call(*this->writer_, context)) << event_name(event);
    }
    for (int i = 0; i < 2; ++i) {
        auto context = conformance::context_for(Event::abort, components);
        auto result = conformance::call(*this->writer_, context);
        EXPECT_TRUE(result) << "abort #" << i + 1 << ": " << (result ? "" : result.error().message);
    }
}

TYPED_TEST_P(WriterConformance, AbortAfterACompletedBackupIsHarmless) {
    using namespace vmshadow::vss;
    auto document = this->backup();
    ASSERT_TRUE(document) << document.error().message();
    auto context = conformance::context_for(Event::abort, document->components);
    EXPECT_TRUE(conformance::call(*this->writer_, context));
}

TYPED_TEST_P(WriterConformance, EveryEventReturnsPromptlyOnceItsDeadlineHasPassed) {
    using namespace vmshadow::vss;
    using namespace std::chrono_literals;
    auto components = conformance::all_components(this->identify());
    for (Event event : {Event::prepare_backup, Event::prepare_snapshot, Event::freeze, Event::thaw,
                        Event::post_snapshot, Event::backup_complete, Event::abort}) {
        std::stop_source stop;
        stop.request_stop();
        auto context = conformance::context_for(
            event, components, EventDeadline(std::chrono::steady_clock::now(), stop.get_token()));
        auto started = std::chrono::steady_clock::now();
        (void)conformance::call(*this->writer_, context);  // success or veto: both fine
        EXPECT_LT(std::chrono::steady_clock::now() - started, 5s) << event_name(event);
    }
    auto context = conformance::context_for(Event::abort, components);
    EXPECT_TRUE(conformance::call(*this->writer_, context));
}

REGISTER_TYPED_TEST_SUITE_P(WriterConformance, IdentityIsNonEmptyAndStable,
                            IdentifyDescribesTheWriterUnderItsOwnIdTheSameWayTwice,
                            WholeBackupSucceedsTwiceInARow, AbortBeforeAnythingIsHarmless,
                            AbortWhileFrozenSucceedsAndIsIdempotent,
                            AbortAfterACompletedBackupIsHarmless,
                            EveryEventReturnsPromptlyOnceItsDeadlineHasPassed);
