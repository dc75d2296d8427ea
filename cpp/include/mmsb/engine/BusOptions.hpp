#pragma once
/// What a Bus is configured with: BusOptions at construction, TickOptions per tick(), and the
/// propagation mode. Plain values, copied freely.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "mmsb/core/Progress.hpp"
#include "mmsb/core/Types.hpp"
#include "mmsb/log/Log.hpp"

namespace mmsb {

struct BusOptions {
  unsigned threads = 0;  ///< threads for batch apply; 0 = one per hardware thread
  std::string path;      ///< bus directory; empty for an in-memory bus
  Durability durability = Durability::Flush;
  bool must_exist = false;  ///< open an existing directory only (mmsb.open)
  bool read_only = false;   ///< replay only: no lock, no writes (bus.at, mmsb.replay)
  std::optional<Lsn> at_lsn;  ///< read-only: stop replay at this lsn
  /// With at_lsn inside a transaction record: apply its changes up to at_lsn (the state right
  /// after that change) instead of stopping before the whole record.
  bool split_transactions = false;
  /// In-memory bus only: keep the log in memory (history, time travel, diff, verify of the log).
  /// false trades them for speed: commits are not encoded at all (HistoryUnavailable then).
  bool keep_history = true;
  bool use_checkpoints = true;  ///< false: replay the whole log from lsn 1 (verify)
  /// Keep the newest N checkpoints and the log after the oldest (time travel before it raises
  /// HistoryUnavailable); nullopt keeps all history.
  std::optional<unsigned> retention;
  /// Submissions the ingest ring holds before submit() blocks (rounded up to a power of two).
  std::size_t queue_capacity = std::size_t{1} << 16;
  /// Hears the recovery of a bus directory (phases "scan" and "replay"); see ProgressFn.
  ProgressFn progress;
  /// Where commit timestamps (Delta::timestamp_ns, history, provenance) come from, in
  /// nanoseconds; empty: the wall clock. Timestamps are the one field of the log that the commits
  /// themselves do not decide, so a deterministic clock (a counter, a fixed value) makes the log's
  /// bytes a function of the commits alone: reproducible logs, and tests that compare them. Called
  /// once per commit and once per propagation wave (its derived deltas share that stamp), on the
  /// committing thread, under the commit lock: a call into the bus from it fails with
  /// Error(InvalidArgument). What it throws, the commit throws, changing nothing.
  std::function<std::uint64_t()> clock;
};

/// tick() settings. Budgets are in nanoseconds, 0 = none; a phase over its budget is reported
/// (TickReport::overruns, stats tick_overruns), never cut short.
struct TickOptions {
  std::uint64_t drain_budget_ns = 0;
  std::uint64_t apply_budget_ns = 0;
  std::uint64_t propagate_budget_ns = 0;
  std::uint64_t validate_budget_ns = 0;
  std::uint64_t gc_budget_ns = 0;
  std::uint64_t total_budget_ns = 0;
  /// Derived pages re-derived and compared with their bytes per tick (round robin by id).
  unsigned validate_sample = 0;
  /// gc() runs at the end of a tick when memory().total_bytes() exceeds this (0 = never).
  std::uint64_t memory_budget_bytes = 0;
};

/// eager: a commit runs its wave before it returns; deferred: commits mark descendants stale and
/// propagate() runs the wave.
enum class PropagationMode : std::uint8_t { Eager, Deferred };

}  // namespace mmsb
