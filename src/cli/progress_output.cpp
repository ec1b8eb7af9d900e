// SPDX-License-Identifier: MIT
#include "cli/progress_output.h"

#include <unistd.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/byte_size.h"

namespace vmshadow::cli {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double rate_of(const Progress& p, std::chrono::duration<double> elapsed) {
    return elapsed.count() > 0.5 ? static_cast<double>(p.bytes_done) / elapsed.count() : 0.0;
}

// Seconds left at the phase's average rate, or -1 when it can't be told.
double eta_of(const Progress& p, double rate) {
    if (p.bytes_total == 0 || rate <= 0 || p.bytes_done > p.bytes_total) return -1;
    return static_cast<double>(p.bytes_total - p.bytes_done) / rate;
}

std::string clock_text(double seconds) {
    auto s = static_cast<long long>(std::llround(seconds));
    char text[32];
    if (s >= 3600)
        std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
    else
        std::snprintf(text, sizeof text, "%lld:%02lld", s / 60, s % 60);
    return text;
}

}  // namespace

TerminalProgress::TerminalProgress(std::FILE* out)
    : out_(out), started_(Clock::now()), phase_started_(started_) {}

std::string TerminalProgress::render(const Progress& p, std::chrono::duration<double> elapsed) {
    std::string line = p.phase;
    if (!p.item.empty()) line += " " + p.item;
    if (p.items_total > 0)
        line += " [" + std::to_string(p.items_done) + "/" + std::to_string(p.items_total) + "]";
    if (p.bytes_total > 0 || p.bytes_done > 0) {
        line += "  " + format_bytes(p.bytes_done);
        if (p.bytes_total > 0) {
            line += " / " + format_bytes(p.bytes_total);
            double pct = 100.0 * static_cast<double>(std::min(p.bytes_done, p.bytes_total)) /
                         static_cast<double>(p.bytes_total);
            char text[16];
            std::snprintf(text, sizeof text, " %3.0f%%", pct);
            line += text;
        }
        double rate = rate_of(p, elapsed);
        if (rate > 0) line += "  " + format_bytes(static_cast<std::uint64_t>(rate)) + "/s";
        double eta = eta_of(p, rate);
        if (eta >= 0) line += "  ETA " + clock_text(eta);
    }
    return line;
}

void TerminalProgress::update(const Progress& p) {
    auto now = Clock::now();
    if (p.phase != phase_) {
        phase_ = p.phase;
        phase_started_ = now;
    }
    if (now - started_ < 2s || now - last_draw_ < 200ms) return;
    last_draw_ = now;
    std::string line = render(p, now - phase_started_);
    // Keep to one terminal line: a wrapped line can't be rewritten with \r.
    if (line.size() > 100) line.resize(100);
    std::fprintf(out_, "\r\033[K%s", line.c_str());
    std::fflush(out_);
    drawn_ = true;
}

void TerminalProgress::finish() {
    if (!drawn_) return;
    std::fprintf(out_, "\r\033[K");
    std::fflush(out_);
    drawn_ = false;
}

JsonProgress::JsonProgress(std::FILE* out) : out_(out), phase_started_(Clock::now()) {}

std::string JsonProgress::render(const Progress& p, std::chrono::duration<double> elapsed) {
    double rate = rate_of(p, elapsed);
    double eta = eta_of(p, rate);
    nlohmann::json line{{"phase", p.phase},
                        {"item", p.item},
                        {"bytes_done", p.bytes_done},
                        {"bytes_total", p.bytes_total},
                        {"items_done", p.items_done},
                        {"items_total", p.items_total},
                        {"rate", std::llround(rate)},
                        {"eta_s", eta >= 0 ? nlohmann::json(std::llround(eta)) : nullptr},
                        {"elapsed_s", std::round(elapsed.count() * 10) / 10}};
    return line.dump();
}

void JsonProgress::emit(const Progress& p) {
    auto now = Clock::now();
    std::fprintf(out_, "%s\n", render(p, now - phase_started_).c_str());
    std::fflush(out_);
    last_emit_ = now;
}

void JsonProgress::update(const Progress& p) {
    auto now = Clock::now();
    // A new phase, or the same phase on another item (the next disk's copy), ends the
    // previous one: its last count is written first.
    if (have_last_ && (p.phase != last_.phase || p.item != last_.item)) {
        if (!last_emitted_) emit(last_);
        phase_started_ = now;
        last_ = p;
        have_last_ = true;
        emit(p);
        last_emitted_ = true;
        return;
    }
    bool first = !have_last_;
    last_ = p;
    have_last_ = true;
    last_emitted_ = false;
    if (first || now - last_emit_ >= 250ms) {
        emit(p);
        last_emitted_ = true;
    }
}

void JsonProgress::finish() {
    if (have_last_ && !last_emitted_) emit(last_);
    last_emitted_ = true;
}

std::unique_ptr<ProgressSink> make_progress_output(ProgressMode mode, bool quiet) {
    if (mode == ProgressMode::json) return std::make_unique<JsonProgress>(stderr);
    if (quiet || mode == ProgressMode::none) return nullptr;
    if (::isatty(STDOUT_FILENO) != 1 || ::isatty(STDERR_FILENO) != 1) return nullptr;
    return std::make_unique<TerminalProgress>(stderr);
}

}  // namespace vmshadow::cli
