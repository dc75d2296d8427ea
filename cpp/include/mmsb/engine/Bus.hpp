#pragma once
/// Bus: the commit path over a PageTable. Every change is a validated delta that bumps the lsn
/// and the target page's epoch; failed calls change nothing.
///
/// Commit order: validate -> append the record to the log (directory buses; durability per mode)
/// -> apply bytes -> epochs. A bus with a directory recovers it at construction: newest valid
/// checkpoint, then the log after it, a torn tail cut off.
/// Thread safety: every member may be called from any thread. Writers and structural changes are
/// serialized by one commit mutex; lsn(), stats() and record atomics are readable without it.
/// Page memory read through views is not synchronized with writers (as with NumPy arrays shared
/// between threads); snapshot() and read() give consistent copies.
#include <atomic>
#include <cassert>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mmsb/core/BlockArena.hpp"
#include "mmsb/core/Progress.hpp"
#include "mmsb/core/Clock.hpp"
#include "mmsb/core/LatencyHistogram.hpp"
#include "mmsb/core/Types.hpp"
#include "mmsb/delta/BatchApply.hpp"
#include "mmsb/delta/Delta.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/engine/BusOptions.hpp"
#include "mmsb/engine/BusReports.hpp"
#include "mmsb/engine/Derivation.hpp"
#include "mmsb/engine/DeviceStaging.hpp"
#include "mmsb/engine/Events.hpp"
#include "mmsb/engine/IngestRing.hpp"
#include "mmsb/engine/ParentLists.hpp"
#include "mmsb/graph/DepGraph.hpp"
#include "mmsb/graph/Semiring.hpp"
#include "mmsb/log/Checkpoint.hpp"
#include "mmsb/log/Log.hpp"
#include "mmsb/log/MemoryLog.hpp"
#include "mmsb/log/RecordCodec.hpp"
#include "mmsb/page/PageTable.hpp"
#include "mmsb/parallel/ThreadPool.hpp"

namespace mmsb {

struct TxnMark;
struct WaveItem;
struct WaveNode;
class WaveBatch;
class DevicePages;
struct DeviceRow;
namespace cuda {
class Replicator;
}

class Bus {
 public:
  struct Submission;  ///< a queued delta or batch (internal)
  /// In-memory bus, or (options.path) open/create and recover a bus directory. Throws
  /// Error(BusLocked / LogCorrupt / Durability / InvalidArgument).
  explicit Bus(BusOptions options = {});
  ~Bus();
  Bus(const Bus&) = delete;
  Bus& operator=(const Bus&) = delete;

  // ---- pages -------------------------------------------------------------------------------
  /// Creates a zero-filled page (lsn +1). Non-empty `initial` must be exactly spec.size bytes and
  /// becomes delta 1 (epoch 1, lsn +1 more). Throws Error(InvalidArgument / DeviceUnavailable /
  /// OutOfMemory / Closed) with nothing created.
  PageRecord& create_page(const PageSpec& spec, std::span<const std::byte> initial = {});
  /// Deletes a live page (lsn +1); its memory is freed once no view pins it.
  void delete_page(PageId id);
  /// Live page record; Error(PageNotFound) otherwise.
  PageRecord& page(PageId id);
  /// Id of the live page named `name`, or 0.
  PageId find_page(std::string_view name);
  /// Copy of the page's cold info (name, shape, metadata, location).
  PageInfo page_info(PageId id);
  /// Ids of live pages in increasing order.
  std::vector<PageId> page_ids();
  std::uint64_t page_count();
  /// Sets (or with nullopt removes) one metadata entry (lsn +1). Removing a missing key is a no-op
  /// that does not commit.
  void set_metadata(PageId id, const std::string& key, const std::optional<MetaValue>& value);
  /// Moves a live page to `location` ("cpu", "cuda:N", "unified"; lsn +1, logged as a Location
  /// record and replayed by recovery): the same bytes, epoch and history in memory of the new
  /// kind; page_info().location names it. Returns false, committing nothing, when the page
  /// already lives there. The bytes cross once (device to device through a host staging copy).
  /// Throws, changing nothing: Error(InvalidArgument) for a malformed location, inside a
  /// transaction (a move is not undone by rollback), or while an export of the page's bytes is
  /// alive (add_export: it would point at freed memory); Error(DeviceUnavailable / OutOfMemory /
  /// Durability / ReadOnly / Closed / PageNotFound).
  bool move_page(PageId id, const std::string& location);
  /// An edit on the device (Page.edit of a "cuda:N" page): a copy of page `id` in its device's
  /// memory, holding the page's bytes at its epoch now. Throws Error(InvalidArgument) unless the
  /// page lives in device memory the host cannot address (cpu and unified pages are edited on the
  /// host), Error(PageNotFound), Error(OutOfMemory / DeviceUnavailable); nothing changes then.
  std::unique_ptr<DeviceStaging> stage_on_device(PageId id);
  /// Commits what changed in `staging` as one delta of its page, diffed on the device after it
  /// finished all queued work (the editor's kernels); false when nothing changed. Throws
  /// Error(EpochConflict) if the page changed since it was staged, Error(InvalidArgument) if it
  /// moved or the bus is read-only, and as any commit otherwise; nothing is committed then.
  bool commit_staged(const DeviceStaging& staging);
  /// Hints that device code is about to use page `id` (a DLPack export to a CUDA consumer): a
  /// unified page migrates to its device, queued on `stream` (the consumer's cudaStream_t;
  /// nullptr: the default stream), and back to the host before the bus next reads or writes it
  /// there. Other pages are unaffected. Throws Error(PageNotFound / DeviceUnavailable).
  void prefetch_for_device(PageId id, void* stream);
  /// Registers something that holds the address of page `r`'s bytes beyond a call (a NumPy view,
  /// a buffer, a DLPack tensor): until the matching drop_export, move_page refuses the page. Read
  /// the address (r.data, host_bytes) after this returns. Thread safety: any thread; never waits
  /// for the commit lock, so it may run under it (a recompute's views).
  void add_export(const PageRecord& r);
  void drop_export(const PageRecord& r) noexcept;

  // ---- commits (BusCommit.cpp) -------------------------------------------------------------
  /// Commits an explicit delta (always bumps the epoch). On success sets d.lsn, d.epoch and
  /// d.timestamp_ns. Throws Error(PageNotFound / InvalidDelta / EpochConflict) unchanged.
  void apply(Delta& d);
  /// One run at `offset`; returns the page's new epoch.
  Epoch write(PageId id, std::uint64_t offset, std::span<const std::byte> data,
              std::optional<Epoch> expect_epoch = std::nullopt);
  /// Replaces the whole content (content.size() must equal the page size) by committing only the
  /// changed bytes. Returns false, committing nothing, when nothing changed.
  bool update(PageId id, std::span<const std::byte> content,
              std::optional<Epoch> expect_epoch = std::nullopt);
  /// Validates every row, then applies all of them (lsn +rows) in parallel by page. Returns the
  /// lsn of the last row (the current lsn for an empty batch). The batch's memory must not change
  /// during the call; its payload may be a view of pages it writes (it is then copied first).
  Lsn apply_batch(const DeltaBatchView& batch);

  // ---- ingest queue and tick (BusTick.cpp) -------------------------------------------------
  /// Queues a delta for the next tick() from any thread, lock-free (the commit lock is not
  /// taken). Only its shape is checked here; the page and bounds are checked by the tick, which
  /// rejects (and reports) an invalid submission without applying it. A full ring blocks (with
  /// the blocking hooks around the wait) or, with block=false, throws Error(QueueFull) with
  /// nothing queued. Throws Error(Closed) (also when the bus closes while this waits),
  /// Error(ReadOnly) for a read-only bus, and Error(Propagation) from a recompute (or
  /// Error(InvalidArgument) from the clock), which must not call into the bus.
  void submit(Delta d, bool block = true);
  /// Queues a copy of a batch (all of it is applied by one tick, or all of it rejected).
  void submit(const DeltaBatchView& batch, bool block = true);
  /// Submissions waiting for a tick.
  std::size_t queue_depth() const noexcept;
  std::size_t queue_capacity() const noexcept { return queue_capacity_; }
  /// Drains the ring and commits what it held as one atomic record (the submissions in ring
  /// order, consecutive single-run deltas and batches merged into one parallel batch), runs the
  /// propagation wave (both modes), the sampled validation and, over the memory budget, gc().
  /// If the commit fails (a recompute raising: Error(Propagation); the log: Error(Durability))
  /// nothing is applied and the drained submissions wait for the next tick, so none is lost.
  /// A sampled validation's recompute that throws something other than an Error (user code
  /// asking to stop: see RecomputeCallable) ends the validation; that exception is rethrown once
  /// the tick's commit, bookkeeping and events are done.
  TickReport tick();
  void set_tick_options(const TickOptions& options);
  /// Keeps the replicas of `replicator` (rank 0 of its group; BusReplicate.cpp) equal to `pages`
  /// (in order, sizes equal to its page sizes) at the end of every tick. Each tick broadcasts
  /// once, after its commit (synced first under durability fsync): the ranges its commit changed
  /// in those pages (submissions and the wave's derived deltas) with their committed bytes, and
  /// the whole of any such page changed outside a tick since the last broadcast; the other ranks
  /// call receive() once per tick. Attaching broadcasts every page whole once. nullptr detaches.
  /// While attached, delete_page refuses those pages. Throws Error(InvalidArgument) (a rank other
  /// than 0, sizes that differ, a page twice, inside a transaction), Error(PageNotFound), or what
  /// the broadcast throws, leaving the previous attachment in place.
  void replicate(std::shared_ptr<cuda::Replicator> replicator, std::vector<PageId> pages);
  TickOptions tick_options();
  /// Reclaims memory without changing committed state or retained history: wholly free arena
  /// slabs, caches, log files and index entries beyond the retention policy.
  GcReport gc();
  /// Last-write lsn of every live page.
  PageAges page_ages();
  /// Durations of data commits (apply, write, update, apply_batch, commit_transaction, tick) and
  /// of ticks; read concurrently with writers.
  const LatencyHistogram& commit_latency() const noexcept { return commit_latency_; }
  const LatencyHistogram& tick_latency() const noexcept { return tick_latency_; }

  // ---- reads -------------------------------------------------------------------------------
  /// Consistent copy of the page into `out` (exactly page size bytes; it may overlap page memory,
  /// this page's too); returns its epoch.
  Epoch snapshot(PageId id, std::span<std::byte> out);
  /// Consistent copy of bytes [offset, offset + out.size()) (`out` as for snapshot).
  void read(PageId id, std::uint64_t offset, std::span<std::byte> out);

  // ---- device pages ------------------------------------------------------------------------
  /// The page's bytes as the host reads them: `data` itself, or for a page in device memory its
  /// host mirror, refreshed now (only the runs written since the last refresh are read back). The
  /// pointer is valid while the page's memory lives (pin it); a device page's later writes leave
  /// the mirror stale until the next call. Works on a closed bus; does not wait for another
  /// thread's transaction. Throws Error(DeviceUnavailable) if the device fails.
  const std::byte* host_bytes(const PageRecord& r);
  DevicePlace device_place(const PageRecord& r);
  /// Bytes moved to and from this bus's device pages.
  DeviceTraffic device_traffic();

  // ---- transactions ------------------------------------------------------------------------
  /// Opens a transaction owned by the calling thread. Its changes apply at once (the owner reads
  /// them) and are logged as one record at commit, so they survive a crash all together or not
  /// at all. Until it ends, other threads' calls wait (call wait_for_turn() first from threads
  /// that must not block while holding a lock such as Python's GIL). Throws
  /// Error(InvalidArgument) if this thread already has one open (no nesting).
  void begin_transaction();
  /// Logs the transaction as one record (durable per mode) and ends it. If logging fails, every
  /// change is rolled back and Error(Durability) is thrown.
  void commit_transaction();
  /// Undoes every change since begin_transaction(): bytes, epochs, lsn, stats, names, metadata
  /// and the page set are as they were (pages created inside are deleted; their ids stay used).
  void rollback_transaction();
  /// Transactions rolled back since the bus was made: the one count a rollback does not restore.
  /// A copy taken inside a transaction rolled back since holds bytes that never committed, at an
  /// epoch the page may reach again with other bytes (Page.edit refuses to commit it).
  std::uint64_t rollbacks() const noexcept { return rollbacks_.load(std::memory_order_acquire); }
  /// True when the calling thread has a transaction open.
  bool in_transaction() const noexcept;
  /// True when another thread's transaction is open, so a call from this thread would wait.
  bool must_wait() const noexcept;
  /// Blocks until no other thread's transaction is open.
  void wait_for_turn();

  // ---- handles -----------------------------------------------------------------------------
  /// Pins a live page so its memory outlives deletion until unpin(); works on a closed bus too.
  PageRecord& pin(PageId id);
  /// Drops a pin taken by pin(). Throws Error(InvalidArgument), changing nothing, when the page
  /// holds no pin: each pin() is undone by exactly one unpin().
  void unpin(PageRecord& record);

  // ---- bus ---------------------------------------------------------------------------------
  /// The lsn as this thread's commits left it. Lock-free: while a commit, a wave or another
  /// thread's transaction runs, it counts changes a rollback may still take back (read_settled).
  Lsn lsn() const noexcept { return lsn_.load(std::memory_order_acquire); }
  /// Runs `read` once no other thread's commit or transaction is in progress, with the commit lock
  /// held, so that what it reads (lsn(), a page's epoch, stats()) is committed state, never a
  /// value a rollback then takes back. This thread's own open transaction counts as its state.
  /// Waits with the blocking hooks; throws as any call from a recompute or the clock does.
  template <class Read>
  auto read_settled(Read&& read) {
    const auto lock = lock_turn();
    return read();
  }
  /// Ends writing and lookups (later calls throw Error(Closed)); pinned memory stays valid. A
  /// directory bus writes what is pending, syncs and releases the directory lock; a sync failure
  /// is thrown as Error(Durability) after the bus is closed.
  void close();
  /// Writes a checkpoint of the current state and returns the lsn it covers: a file in a
  /// directory bus, kept beside the in-memory log otherwise. Throws Error(HistoryUnavailable)
  /// without a log (keep_history false), Error(ReadOnly), Error(Durability) on I/O failure.
  /// `progress` hears phase "checkpoint" (pages written); if it throws, no checkpoint is left.
  Lsn checkpoint(const ProgressFn& progress = {});
  /// A read-only bus holding the state as of `lsn` (replayed from the newest checkpoint at or
  /// before it; an in-memory bus replays its in-memory log from lsn 1). A transaction record (a
  /// bus.transaction block, or a write and its wave) is all or nothing unless
  /// `split_transactions`. Throws Error(HistoryUnavailable) for an lsn beyond lsn() or a bus
  /// that is itself a view of the past.
  /// `progress` hears the replay as BusOptions::progress does.
  std::shared_ptr<Bus> at(Lsn lsn, bool split_transactions = false, const ProgressFn& progress = {});
  /// Every committed delta of page `id` (also a deleted one) in lsn order, read from the log
  /// (files or memory): the provenance index names the page's lsns, the log's record index the
  /// records holding them, and only those are read. After a reopen from a checkpoint the first
  /// call reads the older log once to index it. Throws Error(PageNotFound) for an id never used,
  /// Error(HistoryUnavailable) when the log no longer starts at lsn 1 (retention) or the bus is a
  /// view of the past.
  std::vector<HistoryEntry> history(PageId id);
  /// Byte ranges written by the deltas with lsn in (a, b], per page, merged (sorted, overlaps and
  /// touching runs joined). Throws Error(InvalidArgument) unless a <= b <= lsn(),
  /// Error(HistoryUnavailable) as history().
  std::map<PageId, std::vector<Run>> diff(Lsn a, Lsn b);
  bool read_only() const noexcept { return read_only_; }
  /// Throws Error(ReadOnly) on a read-only bus (time travel, replay), naming what it views.
  /// Thread safe: read_only() never changes.
  void check_not_read_only() const;
  /// Checks the bus: internal invariants (no orphan names or info, live pages have data, each
  /// page's last lsn <= the bus lsn); for a directory bus also that every log record checksums,
  /// and that replaying the whole log from lsn 1, and the newest checkpoint plus its tail, both
  /// give exactly the pages in memory (bytes, epochs, last lsns, layout, names, metadata), and
  /// that the log holds nothing past the bus lsn (read-only views excepted). Problems are
  /// reported, not thrown. Blocks writers while it runs.
  IntegrityReport verify();
  /// Directory ("" for in-memory) and durability mode.
  const std::string& path() const noexcept { return path_; }
  Durability durability() const noexcept { return durability_; }
  /// What recovery found at open (records replayed, torn tail cut, how far the log goes).
  struct RecoveryReport {
    Lsn checkpoint_lsn = 0;
    std::uint64_t records_replayed = 0;
    Lsn log_last_lsn = 0;  ///< the log's last intact lsn: past the bus lsn when opened at an earlier one
    bool truncated_tail = false;
    std::string tail_reason;
  };
  const RecoveryReport& recovery() const noexcept { return recovery_; }
  bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

  // ---- graph and propagation (BusGraph.cpp, BusWave.cpp) -----------------------------------
  /// Makes `child` derived: its data parents become `parents` (in order; replacing earlier data
  /// parents), recomputed by `fn` (with `weights`, empty or one per parent). Logged (lsn +1). In
  /// eager mode the child is recomputed at once (and its descendants in the same wave); in
  /// deferred mode it is marked stale. Re-registering the same parents, weights and spec for a
  /// callable whose function is missing (after a reopen) only attaches `callable`, logging
  /// nothing. Throws Error(PageNotFound / InvalidArgument: empty parents, size or dtype mismatch,
  /// bad weight / GraphCycle / Graph: a parent linked by another kind, or a device_sync child /
  /// Propagation), changing nothing.
  void depend(PageId child, std::span<const PageId> parents, const RecomputeSpec& fn,
              std::span<const double> weights, RecomputeCallable callable = {});
  /// Adds a `control` or `device_sync` edge (lsn +1); `data` edges come from depend(). A
  /// device_sync child is kept an exact copy of its parent (same size, one such parent).
  /// Throws Error(GraphCycle / Graph / PageNotFound / InvalidArgument), changing nothing.
  void add_edge(PageId parent, PageId child, EdgeKind kind);
  /// Removes the edge parent -> child of any kind (lsn +1); a removed data parent leaves the
  /// child's recompute with the remaining ones, recomputed at once (eager) or marked stale
  /// (deferred); with none left the recompute is dropped. Throws Error(Graph) if there is no
  /// such edge, Error(Propagation) if the recompute fails (nothing changed then).
  void remove_edge(PageId parent, PageId child);
  std::vector<Edge> in_edges(PageId id);
  std::vector<Edge> out_edges(PageId id);
  std::vector<PageId> topological_order();
  /// Whole-graph check (cycles, dangling edges, order); problems are reported, not thrown.
  GraphReport validate_graph();
  /// A copy of the child's recompute, parents, weights and memo; nullopt if not derived.
  std::optional<Derivation> derivation(PageId id);
  /// Eager: each commit runs its wave; deferred: commits mark stale, propagate() runs the wave.
  /// Inside a transaction that changed something, logs where the mode changed (a Wave op).
  /// Throws Error(Closed), Error(ReadOnly) on a read-only bus.
  void set_propagation(PropagationMode mode);
  PropagationMode propagation() const noexcept { return propagation_; }
  /// Runs one wave over every stale page (deferred mode, or after a reopen) as one atomic commit.
  /// Returns the number of pages whose bytes changed. Throws Error(Propagation) naming the page
  /// whose recompute failed, with nothing changed.
  std::uint64_t propagate();
  /// Runs the recompute of a derived page into `out` (page size) without committing anything:
  /// the purity validator's probe. Throws Error(Graph) if the page is not derived,
  /// Error(Propagation) if the recompute fails or its callable is missing.
  void preview_recompute(PageId child, std::span<std::byte> out);
  /// Pages whose content may not match their parents: marked stale by a deferred commit or a
  /// control edge, whose callable is missing, or below such a page. Sorted by id.
  std::vector<PageId> stale_pages();
  /// Copies of the page's producing deltas' provenance, newest first, back to user deltas, to
  /// `max_depth` hops; epoch nullopt = current. Throws Error(PageNotFound / HistoryUnavailable).
  std::vector<ProvenanceStep> provenance(PageId id, std::optional<Epoch> epoch, unsigned max_depth);

  // ---- events ----------------------------------------------------------------------------------
  using EventSink = std::function<void(std::span<const BusEvent>)>;
  /// Where events go (called after commits, outside the commit lock, in commit order, on the
  /// committing thread). `mask` bit k enables EventKind k; 0 disables queuing entirely. What the
  /// sink throws leaves the call that delivered (its commit stands); the rest of that batch is not
  /// delivered, later events are. Once it returns no other thread runs the old sink; called from
  /// inside the sink itself (a handler subscribing or cancelling), the batch running goes on and
  /// the next one goes to the new sink. Waits for a delivery on another thread through the
  /// blocking hooks.
  void set_event_sink(EventSink sink, std::uint32_t mask);
  /// Hooks run around any wait for the commit lock (the bindings release Python's GIL there, so
  /// a wave running a Python callable on another thread can take it). Both or neither. Not
  /// synchronized: set them before other threads use the bus (the bindings do, at creation).
  struct BlockingHooks {
    void* (*enter)() = nullptr;
    void (*leave)(void*) = nullptr;
  };
  void set_blocking_hooks(BlockingHooks hooks) noexcept { blocking_ = hooks; }
  unsigned threads() const noexcept { return pool_.threads(); }
  /// Process-unique id of this bus (never reused), so callers can tell buses apart even after
  /// one is destroyed and another is allocated at the same address.
  std::uint64_t instance_id() const noexcept { return instance_id_; }
  BusStats stats() const noexcept;
  /// Zeroes the counters (waits for the commit lock: commits update them without atomics RMW).
  void reset_stats();
  /// Bytes held, by part. First waits (up to 2 s) for buffers reserved ahead to be faulted in on
  /// the prefault helper, so the figure is what the resident set shows, not what it will show.
  MemoryReport memory();

  /// A wave recomputes its pages in batches (Wave::pop_batch) of at most this many pages and
  /// staging bytes: enough to keep the lanes busy, bounded for huge derived pages.
  static constexpr std::size_t kWaveBatchPages = 4096;
  static constexpr std::uint64_t kWaveBatchBytes = std::uint64_t{32} << 20;

 private:
  void check_open() const;
  void check_writable() const;
  /// A commit's timestamp: BusOptions::clock, or the wall clock. Throws what the clock throws;
  /// a clock that calls into the bus gets Error(InvalidArgument) there instead of a deadlock.
  std::uint64_t now_ns();
  void note_commit_latency_locked(std::uint64_t t0) noexcept {
    if (!txn_) commit_latency_.record(monotonic_ns() - t0);
  }
  /// A change whose record the log holds already failed to apply (a device error, or memory
  /// running out while its index entries or events are queued): memory and the log, which may
  /// be durable already, disagree, and the next commit would reuse lsns. So nothing more is
  /// logged, as LMDB panics: writes fail with Error(Durability) until the bus is reopened, which
  /// replays what reached the disk. Allocates nothing: it runs while unwinding.
  void break_log_locked() noexcept;
  /// Held while a change logged outside a transaction (which would undo it instead) is applied:
  /// leaving the scope by an exception calls break_log_locked().
  class LoggedAhead {
   public:
    LoggedAhead(Bus& bus, bool logged) noexcept
        : bus_(logged ? &bus : nullptr), unwinding_(std::uncaught_exceptions()) {}
    ~LoggedAhead() {
      if (bus_ != nullptr && std::uncaught_exceptions() > unwinding_) bus_->break_log_locked();
    }
    LoggedAhead(const LoggedAhead&) = delete;
    LoggedAhead& operator=(const LoggedAhead&) = delete;

   private:
    Bus* bus_;
    int unwinding_;
  };
  /// Held around a change that records itself in an open transaction and then applies: leaving
  /// the scope by an exception (a device write, memory running out) undoes what the change
  /// recorded and applied, so the transaction is as it was before the call. Outside a transaction
  /// it does nothing. Defined in Transaction.hpp.
  class UndoOnFailure;
  void record_delta_locked(PageRecord& r, Delta& d);
  /// `log_now` (a transaction of its own, holding nothing else): the batch is written to the log
  /// as its own record before it is applied, so the disk works while it applies: group commit's
  /// fdatasync starts at once, and a flush or none log writes a large record on its writer
  /// thread (Log::append's may_overlap), waited for once the batch applied.
  Lsn record_batch_locked(const DeltaBatchView& batch, bool log_now = false);
  /// Writes a validated batch to the log (or the in-memory log) as its own record; `may_overlap`
  /// as for Log::append.
  void log_batch_locked(const DeltaBatchView& batch, Lsn first, std::uint64_t timestamp_ns, bool may_overlap = false);
  void preview_locked(PageId child, std::span<std::byte> out);
  void propagate_locked();
  void enqueue(std::unique_ptr<Submission> s, bool block);
  void tick_apply_locked(TickReport& report);
  std::exception_ptr tick_validate_locked(TickReport& report);
  GcReport gc_locked();
  MemoryReport memory_locked();
  std::uint64_t drop_queued() noexcept;
  /// Drops provenance index entries (and propagated inputs) of lsns <= floor: history the
  /// retention no longer keeps.
  void trim_index_locked(Lsn floor);
  std::uint64_t cache_bytes_locked() const;
  std::uint64_t index_bytes_locked() const;
  /// Error(Propagation) on the thread running a wave's recomputes, Error(InvalidArgument) on the
  /// thread running the clock: neither may call into the bus.
  void check_not_reentered() const;
  /// mutex_, taken with the blocking hooks around any wait (after check_not_reentered).
  std::unique_lock<std::mutex> lock_mutex();
  /// Runs `body` all or nothing: inside an open transaction (undone back to where it started on
  /// failure) or as an implicit transaction logged as one record when it succeeds.
  template <class Body>
  void atomically_locked(Body&& body);
  void note_changed_locked(PageId page);
  /// `propagating`: propagate() or a tick, which first count stale pages without a recompute as
  /// notified. Logs a Wave op after the wave's deltas (replay repeats it without recomputes).
  void run_wave_locked(bool propagating = false);
  /// Repeats the bookkeeping of the wave a Wave op (at lsn `lsn`, in replay) names; throws
  /// Error(LogCorrupt) when its skipped pages are not pages that wave could have skipped.
  void replay_wave_locked(const WaveOp& wave, Lsn lsn);
  /// The wave itself: visits and recomputes (in replay: settles) the affected pages in order.
  void visit_wave_locked(bool sweep);
  std::size_t recompute_batch_locked(std::span<const WaveNode> nodes);
  void commit_recompute_locked(WaveItem& item);
  /// Runs the recompute of `child` into `dst`; `kernel`: a reduce's semiring_kernel when the
  /// caller resolved it already (nullptr: resolved here).
  void compute_locked(PageId child, const Derivation& d, const PageRecord& out,
                      std::span<const PageRecord* const> parents, std::span<const std::byte* const> ins,
                      std::span<std::byte> dst, SemiringKernel kernel = nullptr) const;
  /// Each parent's bytes as the host reads them (device pages: their refreshed mirrors).
  std::vector<const std::byte*> host_inputs_locked(std::span<const PageRecord* const> parents);
  /// Applies a graph op (commit and replay); returns the child whose definition it changed
  /// (recomputed or marked stale next), or 0.
  PageId replay_graph_op_locked(const LogOp& op);
  void refresh_dependents_locked(PageId page);
  /// The page is live and has children in the graph: its changes start a wave (eager) or mark
  /// them stale. A bit per id, so a batch tests its rows without touching their records.
  bool has_dependents_locked(PageId page) const noexcept {
    if (page / 64 < dependents_bits_.size()) return (dependents_bits_[page / 64] >> (page % 64) & 1) != 0;
    return !far_dependents_.empty() && far_dependents_.count(page) != 0;
  }
  void drop_from_graph_locked(PageId id);
  void mark_unsettled_stale_locked();
  /// `save`: where each row saves what it overwrites (the transaction's undo), or nothing.
  /// `validated` false (replay only, no save): rows are checked while applied, so a bad row
  /// throws with the rows before it applied (see apply_checked_batch).
  void apply_batch_locked(const DeltaBatchView& batch, Lsn first, std::uint64_t timestamp_ns,
                          UndoSink save = {}, bool validated = true);
  /// apply_batch_locked for a batch with rows on device pages; false (nothing done) without any.
  bool apply_device_batch_locked(const DeltaBatchView& batch, Lsn first, UndoSink save);
  void restore_graph_locked(const GraphImage& g);
  GraphImage graph_image_locked() const;
  void check_derivation_locked(PageId child, std::span<const PageId> parents, const RecomputeSpec& fn,
                               std::span<const double> weights);
  void mark_stale_locked(PageId page);
  /// Drops the page's stale mark, if any (undone with the open transaction).
  void unmark_stale_locked(PageId page);
  void redefined_locked(PageId child);
  /// Replay cut inside a record between changes and their wave: their dependents are left stale.
  void settle_cut_locked();
  void emit_locked(EventKind kind, PageId page, Lsn lsn, Epoch epoch);
  /// Hands queued events to the sink; called by public methods after they release the lock. When
  /// another thread is delivering, returns at once: that thread takes these events too, in order.
  void deliver_events();
  /// deliver_mutex_, taken with the blocking hooks around any wait; an empty lock when this
  /// thread is delivering this bus's events already (it holds the mutex further up its stack).
  std::unique_lock<std::mutex> lock_delivery();
  /// The commit lock, taken once no other thread's transaction is open.
  std::unique_lock<std::mutex> lock_turn();
  void check_no_transaction(const char* what) const;
  /// Error(InvalidArgument) unless this thread has a transaction open, without waiting.
  void require_own_transaction() const;
  // Tick replication (BusReplicate.cpp): at the tick's start, marks the pages changed since the
  // last broadcast; inside the tick's transaction, collects the rows its undo names; after the
  // commit, broadcasts (into rep).
  void replication_begin_locked();
  void replication_collect_locked();
  void replication_send_locked(TickReport& rep);
  /// Broadcasts the collected rows and the pages to send whole; returns the rows sent. Throws
  /// what the replicator throws.
  std::uint64_t replication_broadcast_locked();
  bool replicated_locked(PageId id) const noexcept;
  struct Transaction;
  std::unique_ptr<Transaction> new_transaction_locked();
  /// Ends txn_, keeping its emptied arenas in spare_txn_ for the next transaction; a logged
  /// transaction not yet durable (group commit) is parked instead.
  void recycle_transaction_locked() noexcept;
  /// Group commit (durability=fsync): a logged transaction waits in parked_ until an fdatasync
  /// covers its ticket, keeping its undo in case that sync fails. Durable ones are retired here.
  void release_durable_locked() noexcept;
  /// Keeps delivery_due_ equal to "a sink takes some event kind, or a transaction is parked";
  /// called wherever either changes.
  void note_delivery_due_locked() noexcept;
  void retire_transaction_locked(std::unique_ptr<Transaction> t) noexcept;
  /// After a failed sync: cuts the log back to its durable end and undoes every parked commit,
  /// newest first, so memory equals the durable state again.
  void abandon_unsynced_locked() noexcept;
  /// Makes every parked commit durable now (checkpoint, begin_transaction, and whatever reads
  /// structures that parked commits' undo marks point into). Throws Error(Durability), after
  /// abandoning them, when the sync fails.
  void settle_locked();
  /// Syncs everything written and retires the parked commits; on failure abandons them all and
  /// rethrows Error(Durability).
  void sync_log_locked();
  /// Waits (outside the commit lock, the GIL released) until this thread's last commit on this
  /// bus is durable; throws Error(Durability) if it was abandoned. deliver_events() calls it
  /// first, so every commit path acknowledges only durable commits.
  void await_durable();
  TxnMark mark_locked() const;
  void finish_transaction_locked();
  void undo_locked(Transaction& t, const TxnMark& m) noexcept;
  void undo_heavy_locked(Transaction& t, std::size_t index) noexcept;
  void restore_device_locked(std::span<const DeviceRow> rows, std::span<const std::byte> bytes) noexcept;
  /// Records a delta in the open transaction; `inputs` marks it derived (logged with them).
  void txn_note_delta_locked(PageRecord& r, const Delta& d,
                             const std::span<const std::pair<PageId, Epoch>>* inputs = nullptr);
  /// Records a batch about to be applied, in the open transaction's record or (`log_now`) as a
  /// record of its own written now; returns where apply_batch_locked saves what each row
  /// overwrites (its undo). Throws with nothing recorded or written.
  UndoSink txn_note_batch_locked(const DeltaBatchView& batch, Lsn first, std::uint64_t timestamp_ns, bool log_now);
  void end_transaction_locked() noexcept;
  PageRecord& live_locked(PageId id);
  /// Where a page found by recovery or replay goes: its location, or the host for a read-only
  /// view of the past, or for now when its device is missing (remembered for
  /// check_recovered_places_locked).
  std::uint8_t recovered_place_locked(PageId id, const std::string& name, const std::string& location);
  /// After replay: Error(DeviceUnavailable) naming a page that still lives where this process
  /// cannot place it.
  void check_recovered_places_locked();
  struct Unplaced {
    std::string name, location, why;
  };
  std::map<PageId, Unplaced> unplaced_;  // recovery only: pages kept on the host meanwhile
  /// Moves page `r` to `place` and names `location` in its info (BusMove.cpp); `log` runs once
  /// the bytes are copied, before anything changes: if it (or the copy) throws, the page is as
  /// it was and the new memory is freed.
  void relocate_locked(PageRecord& r, std::uint8_t place, const std::string& location,
                       const std::function<void()>& log);
  void check_delta_locked(const PageRecord& r, const Delta& d) const;
  void commit_delta_locked(PageRecord& r, Delta& d);
  /// A delta diffed from new content (update, an edit on the device): checked against its
  /// expected epoch even when empty (an outdated copy is a conflict), committed unless empty,
  /// then `lock` released and the events delivered. Returns whether it committed.
  bool commit_diff(std::unique_lock<std::mutex>& lock, PageRecord& r, Delta& d, std::uint64_t t0);
  /// Makes `d` the page's change at `lsn`: writes its bytes (unless `written`: they are in the
  /// page's memory already) and moves the page's epoch, last lsn and provenance index on.
  void apply_delta_locked(PageRecord& r, Delta& d, Lsn lsn, bool written = false);
  /// Appends the record(s) in record_buf_ (lsns up to `last`) to the log, if there is one. With
  /// group commit a transaction's record is left to sync later; any other is synced here.
  /// A non-empty `tail` ends the last record (a file log only: see Log::append, also for
  /// `may_overlap`).
  void log_locked(Lsn last, std::span<const std::byte> tail = {}, bool may_overlap = false);
  /// Whether a commit should run as a transaction so it can park for group commit (fsync log,
  /// no transaction open): its undo lets it apply before its sync.
  bool grouping_locked() const noexcept { return !txn_ && log_ && log_->group(); }
  void recover_locked(std::optional<Lsn> until, bool split_transactions, const ProgressFn& progress);
  /// Loads a checkpoint's pages and graph into this (empty) bus; `of` names where it came from.
  /// Throws Error(LogCorrupt) if it cannot be restored.
  void restore_checkpoint_locked(const CheckpointData& cp, const std::string& of);
  /// In-memory log: replays into `into` (a fresh read-only bus, locked) up to `stop`, from the
  /// newest in-memory checkpoint at or before it (`newest`), or from the oldest start the log
  /// still has. Throws Error(HistoryUnavailable) when the retention dropped what `stop` needs.
  void replay_memory_log_locked(Bus& into, Lsn stop, bool split, bool newest, const ProgressFn& progress);
  bool replay_record_locked(const ScannedRecord& r, const std::string& where, Lsn base, Lsn stop, bool split);
  /// Whether commits are encoded and kept: a directory log, or the in-memory one.
  bool logging() const noexcept { return log_ != nullptr || mem_log_ != nullptr; }
  void replay_op_locked(const LogOp& op, Lsn lsn);
  /// Throws Error(LogCorrupt) unless `child` has a recompute and each input is a parent of it at
  /// an epoch it has reached.
  void check_derived_inputs_locked(PageId child, const std::vector<std::pair<PageId, Epoch>>& inputs, Lsn lsn);
  /// Lines describing every difference between this bus's pages and `other`'s.
  void compare_pages_locked(Bus& other, const std::string& what, std::vector<std::string>& problems);
  void count(std::uint64_t deltas, std::uint64_t bytes) noexcept;

  mutable std::mutex mutex_;
  const std::uint64_t instance_id_;
  PageTable table_;
  std::unique_ptr<DevicePages> devices_;  // device pages' transfers and mirrors (over table_)
  // Live exports (add_export) per page. Its own mutex, never held while taking mutex_: taken
  // under mutex_ by move_page and by a recompute's views, and alone by every other export.
  std::mutex exports_mutex_;
  std::unordered_map<PageId, std::uint64_t> exports_;
  struct Replication;
  std::shared_ptr<Replication> replication_;  // Bus::replicate; shared_ptr: defined in one file
  ThreadPool pool_;
  std::function<std::uint64_t()> clock_;  // BusOptions::clock
  std::atomic<Lsn> lsn_{0};
  std::atomic<bool> closed_{false};
  std::string path_;
  Durability durability_ = Durability::Flush;
  std::unique_ptr<Log> log_;
  std::unique_ptr<MemoryLog> mem_log_;  // the log of an in-memory (writable) bus
  std::vector<std::byte> record_buf_;  // reused encoding buffer for log records
  // The delta of write(), reused under the commit lock: a write then allocates nothing. Writes
  // larger than kKeptWriteBytes use one of their own, so that no huge buffer stays resident.
  Delta write_delta_;
  static constexpr std::size_t kKeptWriteBytes = std::size_t{64} << 10;
  RecoveryReport recovery_;
  bool read_only_ = false;
  bool log_broken_ = false;  // break_log_locked(): no more writes until reopened
  std::string broken_why_;   // set when no log record is to blame (restore_device_locked)
  // A view of the past (read_only from construction, while read_only_ is set only after recovery):
  // it keeps every page on the host, whatever its location.
  bool history_view_ = false;
  std::unique_ptr<Transaction> txn_;  // the open transaction, if any (guarded by mutex_)
  std::unique_ptr<Transaction> spare_txn_;  // a finished one whose arenas the next reuses
  std::deque<std::unique_ptr<Transaction>> parked_;  // logged, not yet durable (oldest first)
  std::optional<unsigned> mem_retention_;  // in-memory bus: checkpoints (and log) kept
  std::atomic<bool> txn_open_{false};
  std::atomic<std::uint64_t> rollbacks_{0};
  std::atomic<std::thread::id> txn_owner_{};
  std::condition_variable txn_done_;
  BlockingHooks blocking_;
  DepGraph graph_;
  DerivationTable derivations_;
  // Written under the commit lock, read by propagation() without it (any thread).
  std::atomic<PropagationMode> propagation_{PropagationMode::Eager};
  // While a tick commits: its changes are noted and logged as deferred ones whatever the mode
  // (tick()), without the setting users read changing.
  bool ticking_ = false;
  PropagationMode commit_mode_locked() const noexcept {
    return ticking_ ? PropagationMode::Deferred : propagation_.load(std::memory_order_relaxed);
  }
  std::vector<PageId> changed_;              // pages changed since the last wave (this commit), once each
  std::vector<std::uint64_t> changed_bits_;  // membership of changed_, by page id
  void clear_changed_locked() noexcept;
  std::unordered_set<PageId> stale_;         // marked stale, waiting for a wave
  std::unordered_set<PageId> forced_;        // recompute regardless of the memo (depend)
  // Replay (recovery, time travel) of format 4 logs repeats each wave at its Wave op without
  // recomputes: `derived` holds the pages the wave logged Derived ops for. Older logs and
  // checkpoints hold no stale marks (`legacy`: the segment being replayed; `legacy_seen`: such
  // data was replayed, so mark_unsettled_stale_locked estimates them). Format 4 and 5 waves
  // (`unscoped_waves`) visited every stale derived page and did not recompute control children.
  // `skipped`: the pages the wave being repeated left stale for a missing callable (its Wave op
  // says, since format 7: `skip_lists`), and `skipped_reached` how many of them it reached.
  struct ReplayState {
    bool active = false;
    bool legacy = false;
    bool unscoped_waves = false;
    bool skip_lists = false;
    bool legacy_seen = false;
    std::unordered_set<PageId> derived;
    std::unordered_set<PageId> skipped;
    std::size_t skipped_reached = 0;
  } replay_;
  std::vector<PageId> wave_skipped_;  // pages the live wave left stale for a missing callable
  std::atomic<std::thread::id> wave_owner_{};  // thread running a wave (callables may not re-enter)
  std::atomic<std::thread::id> clock_owner_{};  // thread running BusOptions::clock (may not re-enter)
  std::vector<std::byte> scratch_;           // staging buffer of recomputes
  EventSink sink_;
  // Whether deliver_events() has anything to do besides await_durable(): without a sink taking
  // some event kind and a parked transaction it has not, and every commit skips its two locks.
  // Written under mutex_ (note_delivery_due_locked), read without it: a commit reads it after its
  // own unlock, so it sees every change made under the lock before; one it does not see was made
  // later, by a thread that delivers for itself.
  std::atomic<bool> delivery_due_{false};
  std::uint32_t event_mask_ = 0;
  std::vector<BusEvent> events_;             // queued under mutex_, delivered in order
  // A thread is delivering (under mutex_): it looks at events_ again, under mutex_, before it
  // clears this, so a committer that sees it set leaves its events to that thread.
  bool delivering_ = false;
  std::mutex deliver_mutex_;  // held around sink calls: set_event_sink waits for them
  // Per-page lsn index (provenance). Commits only queue entries (queue_index_locked); queries
  // fold them into index_ first, so a batch pays a copy of its page ids, not a hash lookup per
  // row. The queue is runs of consecutive lsns sharing a timestamp and source (a batch's rows, a
  // wave's propagated deltas, usually one delta of a commit) and their page ids: 8 bytes an entry
  // inside a run. It and the derived inputs below grow by every wave's derived deltas (10k
  // entries for a 10k-page wave): deques, which grow in chunks instead of copying everything at
  // each doubling as a vector does, on an arena whose next chunk is faulted in ahead of them
  // (BlockArena).
  template <class T>
  using IndexDeque = std::deque<T, ArenaAllocator<T>>;
  std::shared_ptr<BlockArena> index_arena_ = std::make_shared<BlockArena>();
  struct IndexEntry {
    Lsn lsn;
    std::uint64_t timestamp_ns;
    Source source;
  };
  struct PageHistory {
    Epoch first_epoch = 1;  // epoch produced by entries.front()
    std::vector<IndexEntry> entries;
  };
  struct PendingRun {
    Lsn first_lsn;
    std::uint64_t timestamp_ns;
    std::uint32_t count;  // entries, their pages next in pending_pages_ (a record holds < 2^32 lsns)
    Source source;
    /// Whether an entry at `lsn` with this timestamp and source extends the run by one.
    bool continued_by(Lsn lsn, std::uint64_t ts, Source s) const noexcept {
      return first_lsn + count == lsn && timestamp_ns == ts && source == s &&
             count != std::numeric_limits<std::uint32_t>::max();
    }
  };
  /// Queues the index entries of lsns first, first + 1, ... for `pages` (one each), in lsn order.
  void queue_index_locked(std::span<const PageId> pages, Lsn first, std::uint64_t timestamp_ns, Source source);
  /// One entry (every committed delta): inline where it continues the newest run, as all of a
  /// wave's derived deltas but its first do.
  void queue_index_locked(PageId page, Lsn lsn, std::uint64_t timestamp_ns, Source source) {
    if (!pending_runs_.empty() && pending_runs_.back().continued_by(lsn, timestamp_ns, source)) {
      pending_pages_.push_back(page);
      ++pending_runs_.back().count;
      return;
    }
    queue_index_locked(std::span(&page, 1), lsn, timestamp_ns, source);
  }
  /// Back to `pages` queued ids and `runs` runs, the newest of them `last_count` long (a mark).
  void truncate_index_queue_locked(std::size_t pages, std::size_t runs, std::uint32_t last_count) noexcept;
  void catch_up_index_locked();
  std::unordered_map<PageId, PageHistory> index_;
  IndexDeque<PendingRun> pending_runs_{ArenaAllocator<PendingRun>(index_arena_)};
  IndexDeque<PageId> pending_pages_{ArenaAllocator<PageId>(index_arena_)};
  // Inputs of propagated deltas, appended in lsn order (commits and replay both run in lsn
  // order): a lookup is a binary search, a rollback truncates. An entry names the parent list
  // the delta was computed from, not their epochs: a parent's epoch then is the one its index
  // entries give just before the delta's lsn (parent_epoch_locked), since a wave recomputes a
  // page only once all its parents are final. Copying the inputs instead cost a 10k-page wave
  // 15% (72 bytes of fresh memory a page, against 16).
  struct DerivedEntry {
    Lsn lsn;
    const ParentLists::List* parents;
  };
  void note_derived_locked(Lsn lsn, const ParentLists::List* parents) { derived_.push_back({lsn, parents}); }
  /// The kept parent list of a propagated delta computed from `inputs` (recovery: its logged
  /// inputs; those of the child's derivation, `d` if any, when they name the same pages).
  const ParentLists::List* kept_parents_locked(Derivation* d, std::span<const std::pair<PageId, Epoch>> inputs);
  const ParentLists::List* kept_parents_locked(Derivation& d) {
    if (d.kept_parents == nullptr) d.kept_parents = parent_lists_.intern(d.parents);
    assert(*d.kept_parents == d.parents && "a change to Derivation::parents did not reset kept_parents");
    return d.kept_parents;
  }
  /// The epoch page `page` had just before lsn `lsn`, from the index (caught up): for an input
  /// of the propagated delta at `lsn`. 0 for an id without a slot (only a crafted log names one).
  Epoch parent_epoch_locked(PageId page, Lsn lsn);
  void drop_unused_parent_lists_locked();
  ParentLists parent_lists_;
  IndexDeque<DerivedEntry> derived_{ArenaAllocator<DerivedEntry>(index_arena_)};
  // Inputs of the propagated deltas the index trim kept at or below its floor (each the newest
  // entry of its page there): their parents' older entries may be gone, so their epochs are
  // copied out before the trim. In lsn order, all below derived_'s.
  struct FrozenEntry {
    Lsn lsn;
    std::uint64_t begin;  // into frozen_items_
    std::uint64_t count;
  };
  std::vector<FrozenEntry> frozen_;
  std::vector<std::pair<PageId, Epoch>> frozen_items_;
  /// The inputs of the propagated delta at `lsn`, or nothing for another one.
  std::vector<std::pair<PageId, Epoch>> derived_inputs_locked(Lsn lsn);
  // Below this many output bytes a batch's built-in recomputes run on the committing thread.
  static constexpr std::uint64_t kWaveLaneBytes = std::uint64_t{64} << 10;
  // Reused by every wave (the wave runs under the commit lock); bounded by kWaveBatchPages/Bytes.
  std::unique_ptr<WaveBatch> wave_batch_;
  std::vector<WaveNode> wave_nodes_;
  std::vector<std::uint64_t> dependents_bits_;  // by page id below kDenseDependentIds: has_dependents_locked
  std::unordered_set<PageId> far_dependents_;    // the ids above it (a log may skip far ahead)
  static constexpr PageId kDenseDependentIds = PageId{1} << 24;  // a bitmap of at most 2 MiB
  std::uint64_t wave_timestamp_ns_ = 0;
  struct Counters {
    std::atomic<std::uint64_t> deltas_applied{0}, bytes_applied{0}, commits{0}, pages_created{0},
        pages_deleted{0}, waves{0}, recomputes{0}, memo_skips{0}, cutoffs{0}, derived_deltas{0}, events{0},
        submits_rejected{0}, submits_discarded{0}, ticks{0}, tick_overruns{0}, validation_failures{0},
        gc_runs{0}, gc_bytes_freed{0};
    std::atomic<std::uint64_t> submits{0};  // the only one bumped outside the lock (fetch_add)
  } counters_;
  LatencyHistogram commit_latency_;
  LatencyHistogram tick_latency_;
  // Ingest: submissions own their bytes; the ring holds pointers (released by tick or close).
  // It is created by the first submit(), so a bus that never submits holds no ring.
  using Ring = IngestRing<Submission*>;
  Ring& ring();
  Ring* ring_if_any() const noexcept { return ring_.load(std::memory_order_acquire); }
  std::size_t queue_capacity_;
  std::mutex ring_create_;  // creation, and closing against it
  std::atomic<Ring*> ring_{nullptr};
  std::vector<std::unique_ptr<Submission>> carry_;  // drained by a failed tick: first next time
  std::atomic<std::size_t> carry_count_{0};
  std::atomic<std::uint64_t> queued_bytes_{0};      // payload bytes of waiting submissions
  std::vector<Submission*> drained_;                // reused by tick
  DeltaBatch tick_batch_;                           // consecutive mergeable submissions
  TickOptions tick_options_;
  std::uint64_t tick_count_ = 0;
  PageId validate_cursor_ = 0;  // sampled validation resumes after this derived page
  std::uint64_t index_capacity_bytes_ = 0;  // entries' capacity in index_ (kept, not summed)
  Lsn index_floor_ = 0;                     // entries of lsns <= this were dropped (retention)
  // History (BusHistory.cpp) reads the records the index names, located by the log's record index.
  // Reopened from a checkpoint, or trimmed, the index lacks lsns up to unindexed_through_ (0:
  // none): the first history() reads them from the whole log (index_whole_log_locked).
  void index_whole_log_locked();
  Lsn unindexed_through_ = 0;
};

}  // namespace mmsb
