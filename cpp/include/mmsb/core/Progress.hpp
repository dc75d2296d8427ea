#pragma once
/// Progress of long operations (recovery, replay, time travel, checkpoint) for whoever shows it:
/// a terminal or notebook progress bar in Python, nothing by default.
#include <cstdint>
#include <functional>
#include <limits>
#include <string_view>

namespace mmsb {

/// Called with the phase ("scan": log bytes read and checked; "replay": log records applied;
/// "checkpoint": pages written), how much of it is done and its total. May throw to abandon the
/// operation, which then fails as any error would (a checkpoint leaves no file; an open leaves
/// the directory as it was). Called on the thread doing the work, with the bus lock held: it
/// must not call back into the bus.
using ProgressFn = std::function<void(std::string_view phase, std::uint64_t done, std::uint64_t total)>;

/// Reports one phase to a ProgressFn at most ~kSteps times plus once at each end, so that the
/// loop it counts pays one comparison per step. With an empty function it never reports.
/// Not thread-safe: one meter per loop.
class ProgressMeter {
 public:
  static constexpr std::uint64_t kSteps = 100;

  ProgressMeter(const ProgressFn& fn, std::string_view phase, std::uint64_t total)
      : fn_(fn ? &fn : nullptr), phase_(phase), total_(total) {
    if (fn_ == nullptr) {
      next_ = std::numeric_limits<std::uint64_t>::max();
      return;
    }
    step_ = total_ / kSteps == 0 ? 1 : total_ / kSteps;
    next_ = step_;
    (*fn_)(phase_, 0, total_);
  }

  void advance(std::uint64_t n = 1) {
    done_ += n;
    if (done_ >= next_) report();
  }

  /// The last report (done == total when every unit was counted).
  void finish() {
    if (fn_ != nullptr && reported_ != done_) (*fn_)(phase_, done_, total_);
    reported_ = done_;
  }

 private:
  void report() {
    reported_ = done_;
    next_ = done_ + step_;
    (*fn_)(phase_, done_, total_);
  }

  const ProgressFn* fn_;
  std::string_view phase_;
  std::uint64_t total_;
  std::uint64_t done_ = 0;
  std::uint64_t reported_ = 0;
  std::uint64_t step_ = 1;
  std::uint64_t next_ = 0;
};

/// Phase "replay" of a log from lsn `base` (exclusive) to `last`: progress in lsns.
class ReplayMeter {
 public:
  ReplayMeter(const ProgressFn& fn, std::uint64_t base, std::uint64_t last)
      : base_(base), last_(last > base ? last : base), meter_(fn, "replay", last_ - base_) {}

  /// Every lsn up to `lsn` has been replayed (or skipped as covered by the checkpoint).
  void reached(std::uint64_t lsn) {
    const std::uint64_t at = lsn < base_ ? base_ : (lsn > last_ ? last_ : lsn);
    if (at > base_ + done_) {
      meter_.advance(at - base_ - done_);
      done_ = at - base_;
    }
  }
  void finish() { meter_.finish(); }

 private:
  std::uint64_t base_, last_;
  std::uint64_t done_ = 0;
  ProgressMeter meter_;
};

}  // namespace mmsb
