// SPDX-License-Identifier: MIT
#pragma once
// How the CLI shows a task's progress (common/task.h's ProgressSink), as restic and borg do:
// - `TerminalProgress`: one live line on the terminal — phase, item, bytes done / total,
//   percent, rate, ETA — rewritten in place at most 5 times a second, shown only once the
//   operation has run 2 s (quick commands print nothing extra), cleared when it finishes.
// - `JsonProgress` (`--progress=json`): one JSON object per line on stderr for scripts:
//   every change of phase or item (after the last line of the one before, so each phase's
//   and item's final count is written), then at most 4 lines a second, and a last line at the end.
// Rates are computed here from the steady clock, not by the operation.
// `make_progress_output` picks one from `--progress` and `--quiet` and whether stdout and
// stderr are terminals (a line on a pipe or a log file is noise).
//
// Thread-safety: called under the TaskContext's lock, so one call at a time.

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "common/task.h"

namespace vmshadow::cli {

enum class ProgressMode { automatic, json, none };

class TerminalProgress final : public ProgressSink {
  public:
    explicit TerminalProgress(std::FILE* out);
    void update(const Progress& progress) override;
    void finish() override;
    // The line for a state, `elapsed` into its phase (exposed for tests).
    static std::string render(const Progress& progress, std::chrono::duration<double> elapsed);

  private:
    std::FILE* out_;
    std::chrono::steady_clock::time_point started_, phase_started_, last_draw_{};
    std::string phase_;
    bool drawn_ = false;
};

class JsonProgress final : public ProgressSink {
  public:
    explicit JsonProgress(std::FILE* out);
    void update(const Progress& progress) override;
    void finish() override;
    static std::string render(const Progress& progress, std::chrono::duration<double> elapsed);

  private:
    void emit(const Progress& progress);
    std::FILE* out_;
    std::chrono::steady_clock::time_point phase_started_, last_emit_{};
    Progress last_{};
    bool have_last_ = false, last_emitted_ = true;
};

// nullptr when nothing is to be shown.
std::unique_ptr<ProgressSink> make_progress_output(ProgressMode mode, bool quiet);

}  // namespace vmshadow::cli
