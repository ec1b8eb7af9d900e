// SPDX-License-Identifier: MIT
#pragma once
// NullProvider: a Provider whose snapshot set holds nothing.
//
// This module is: the provider for runs that exercise writers alone (`vmshadow writers
// test`): create_snapshot_set returns an empty set at once; finish and abort do nothing.
// This module is not: a way to back anything up.
//
// Thread-safety: stateless; safe from any thread.

#include "vss/provider.h"

namespace vmshadow::vss {

class NullProvider final : public Provider {
  public:
    std::string name() const override { return "null"; }
    Result<SnapshotSet> create_snapshot_set(const SnapshotRequest& request) override {
        return SnapshotSet{request.backup_id, std::chrono::system_clock::now(), {}};
    }
    Status finish_snapshot_set(const SnapshotSet&) override { return {}; }
    Status abort_snapshot_set(const std::string&) override { return {}; }
};

}  // namespace vmshadow::vss
