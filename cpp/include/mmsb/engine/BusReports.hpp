#pragma once
/// What a Bus reports: counters (BusStats), memory (MemoryReport), verify(), gc() and tick()
/// results, history and provenance entries, device traffic. Plain values, returned by copy.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mmsb/core/Types.hpp"
#include "mmsb/delta/Delta.hpp"
#include "mmsb/page/Page.hpp"

namespace mmsb {

/// What verify() found. ok is true when problems is empty.
struct IntegrityReport {
  bool ok = true;
  std::uint64_t pages_checked = 0;
  std::uint64_t records_checked = 0;  ///< log records read back and checksummed
  bool log_checked = false;           ///< a directory bus: log replayed and compared with memory
  std::vector<std::string> problems;
};

/// One committed delta of a page, as history() reports it.
struct HistoryEntry {
  Lsn lsn = 0;
  Epoch epoch = 0;  ///< the page's epoch after this delta
  Source source = Source::User;
  std::uint64_t timestamp_ns = 0;
  std::vector<Run> runs;
};

/// Monotonic counters since creation or the last reset_stats().
struct BusStats {
  std::uint64_t deltas_applied = 0;  ///< user deltas (batch rows count one each)
  std::uint64_t bytes_applied = 0;
  std::uint64_t commits = 0;
  std::uint64_t pages_created = 0;
  std::uint64_t pages_deleted = 0;
  std::uint64_t waves = 0;           ///< propagation waves that ran
  std::uint64_t recomputes = 0;      ///< recomputes run (with or without a resulting delta)
  std::uint64_t memo_skips = 0;      ///< recomputes skipped: parents' epochs equal the memo
  std::uint64_t cutoffs = 0;         ///< recomputes whose output was unchanged (no delta)
  std::uint64_t derived_deltas = 0;  ///< deltas committed by propagation
  std::uint64_t events = 0;          ///< events handed to the sink
  std::uint64_t submits = 0;         ///< submissions accepted by submit()
  std::uint64_t submits_rejected = 0;   ///< submissions a tick found invalid (not applied)
  std::uint64_t submits_discarded = 0;  ///< submissions still queued when the bus closed
  std::uint64_t ticks = 0;
  std::uint64_t tick_overruns = 0;   ///< ticks with at least one phase over its budget
  std::uint64_t validation_failures = 0;  ///< sampled derived pages that did not match a recompute
  std::uint64_t gc_runs = 0;
  std::uint64_t gc_bytes_freed = 0;
  std::uint64_t queue_depth = 0;       ///< submissions waiting now (a gauge, not reset)
  std::uint64_t queue_high_water = 0;  ///< most submissions waiting at once
};

/// What gc() reclaimed. GC never changes committed state or retained history.
struct GcReport {
  std::uint64_t bytes_freed = 0;         ///< drop of memory().total_bytes()
  std::uint64_t pause_ns = 0;            ///< time the commit lock was held
  std::uint64_t arena_bytes_released = 0;  ///< page memory (wholly free slabs) unmapped
  /// records of deleted pages released (buses without history only), 4096 ids at a time
  std::uint64_t record_bytes_freed = 0;
  std::uint64_t cache_bytes_freed = 0;   ///< staging buffers, spare transaction, tick buffers
  std::uint64_t index_bytes_freed = 0;   ///< provenance index entries older than the retained history
  std::uint64_t log_files_removed = 0;   ///< checkpoints and segments beyond the retention policy
  std::uint64_t log_bytes_freed = 0;     ///< in-memory bus: its log and checkpoints beyond the retention
};

/// tick() phases, in the order they run.
enum class TickPhase : std::uint8_t { Drain, Apply, Propagate, Validate, Gc };
inline constexpr int kTickPhaseCount = 5;
/// "drain", "apply", "propagate", "validate", "gc".
std::string_view tick_phase_name(TickPhase p) noexcept;

/// What one tick() did.
struct TickReport {
  std::uint64_t tick = 0;         ///< 1 for the bus's first tick
  Lsn first_lsn = 0;              ///< lsns this tick committed: (first_lsn, last_lsn], empty when equal
  Lsn last_lsn = 0;
  std::uint64_t submissions = 0;  ///< drained from the ring (rejected ones included)
  std::uint64_t deltas_applied = 0;
  std::uint64_t bytes_applied = 0;
  std::uint64_t rejected = 0;     ///< submissions not applied: page gone, out of bounds, epoch conflict
  std::vector<std::string> rejections;  ///< why, for the first 16 rejected
  std::uint64_t recomputes = 0;
  std::uint64_t derived_deltas = 0;
  std::uint64_t validated = 0;    ///< derived pages re-derived by the sampled validation
  std::vector<PageId> validation_failures;
  bool gc_ran = false;
  GcReport gc;
  std::uint64_t phase_ns[kTickPhaseCount] = {};
  std::uint64_t total_ns = 0;
  std::vector<std::string> overruns;  ///< phases (or "total") over their budget
  std::uint64_t queue_depth = 0;      ///< submissions left waiting after the drain
  /// With Bus::replicate: rows broadcast after this tick (0 without a replicator), and why the
  /// broadcast failed (the replicator is detached then; the tick itself is committed).
  std::uint64_t replicated_rows = 0;
  std::string replication_error;
};

/// When each live page was last written (cold-page policies): parallel arrays in id order.
struct PageAges {
  std::vector<PageId> ids;
  std::vector<Lsn> last_lsn;
};

/// One step of a page's provenance: the delta that produced (page, epoch).
struct ProvenanceStep {
  PageId page = 0;
  Epoch epoch = 0;
  Lsn lsn = 0;
  Source source = Source::User;
  std::uint64_t timestamp_ns = 0;
  std::vector<std::pair<PageId, Epoch>> inputs;  ///< parents and their epochs (propagation)
};

/// Counters of the bus's device pages since it was created.
struct DeviceTraffic {
  std::uint64_t bytes_written = 0;       ///< host bytes written into device pages
  std::uint64_t bytes_read = 0;          ///< device bytes read back (mirrors, undo, reads)
  std::uint64_t mirror_syncs = 0;        ///< mirror refreshes that moved bytes
  std::uint64_t mirror_bytes_synced = 0; ///< bytes those refreshes moved
  std::uint64_t device_recomputes = 0;   ///< built-in recomputes run on the device (no mirror)
};

/// Where a page's bytes live (bus.device_place).
struct DevicePlace {
  bool on_device = false;  ///< device memory the host cannot address ("cuda:N")
  bool managed = false;    ///< managed memory ("unified"): host-addressable
  int ordinal = 0;         ///< CUDA device of either
  bool emulated = false;   ///< a test emulation over host memory (emulate_devices)
};

/// Real bytes held by the bus, by kind.
struct MemoryReport {
  std::uint64_t pages = 0;
  std::uint64_t data_bytes = 0;          ///< bytes of live page data (as requested)
  std::uint64_t arena_slack_bytes = 0;   ///< reserved beyond data_bytes: arena, record slots ahead
  std::uint64_t metadata_bytes = 0;      ///< hot records (of every id used) + cold info + name index
  std::uint64_t graph_bytes = 0;         ///< dependency graph and derivations
  std::uint64_t index_bytes = 0;         ///< per-page lsn index (provenance) and the log's record index (history)
  std::uint64_t cache_bytes = 0;         ///< reusable buffers: commit staging, a spare transaction, device batch buffers
  std::uint64_t log_bytes = 0;           ///< the in-memory log, or log bytes not yet written out
  std::uint64_t queue_bytes = 0;         ///< the ingest ring and the submissions waiting in it
  std::uint64_t mirror_bytes = 0;        ///< host mirrors of device pages
  std::uint64_t device_bytes = 0;        ///< device memory of live device pages (as requested; not in total)
  std::uint64_t record_bytes_per_page = sizeof(PageRecord);
  std::uint64_t total_bytes() const noexcept {
    return data_bytes + arena_slack_bytes + metadata_bytes + graph_bytes + index_bytes + cache_bytes + log_bytes +
           queue_bytes + mirror_bytes;
  }
};

}  // namespace mmsb
