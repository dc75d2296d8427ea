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
#include <cstdint>
#include <map>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mmsb/core/Types.hpp"
#include "mmsb/delta/Delta.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/log/Log.hpp"
#include "mmsb/log/RecordCodec.hpp"
#include "mmsb/page/PageTable.hpp"
#include "mmsb/parallel/ThreadPool.hpp"

namespace mmsb {

struct BusOptions {
  unsigned threads = 0;  ///< threads for batch apply; 0 = one per hardware thread
  std::string path;      ///< bus directory; empty for an in-memory bus
  Durability durability = Durability::Flush;
  bool must_exist = false;  ///< open an existing directory only (mmsb.open)
  bool read_only = false;   ///< replay only: no lock, no writes (bus.at, mmsb.replay)
  std::optional<Lsn> at_lsn;  ///< read-only: stop replay at this lsn
  bool use_checkpoints = true;  ///< false: replay the whole log from lsn 1 (verify)
  /// Keep the newest N checkpoints and the log after the oldest (time travel before it raises
  /// HistoryUnavailable); nullopt keeps all history.
  std::optional<unsigned> retention;
};

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
  std::uint64_t deltas_applied = 0;
  std::uint64_t bytes_applied = 0;
  std::uint64_t commits = 0;
  std::uint64_t pages_created = 0;
  std::uint64_t pages_deleted = 0;
};

/// Real bytes held by the bus, by kind.
struct MemoryReport {
  std::uint64_t pages = 0;
  std::uint64_t data_bytes = 0;          ///< bytes of live page data (as requested)
  std::uint64_t arena_slack_bytes = 0;   ///< reserved by the arena beyond data_bytes
  std::uint64_t metadata_bytes = 0;      ///< hot records + cold info + name index
  std::uint64_t record_bytes_per_page = sizeof(PageRecord);
  std::uint64_t total_bytes() const noexcept { return data_bytes + arena_slack_bytes + metadata_bytes; }
};

class Bus {
 public:
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

  // ---- commits -----------------------------------------------------------------------------
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
  /// lsn of the last row (the current lsn for an empty batch).
  Lsn apply_batch(const DeltaBatchView& batch);

  // ---- reads -------------------------------------------------------------------------------
  /// Consistent copy of the page into `out` (exactly page size bytes); returns its epoch.
  Epoch snapshot(PageId id, std::span<std::byte> out);
  /// Consistent copy of bytes [offset, offset + out.size()).
  void read(PageId id, std::uint64_t offset, std::span<std::byte> out);

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
  /// True when the calling thread has a transaction open.
  bool in_transaction() const noexcept;
  /// True when another thread's transaction is open, so a call from this thread would wait.
  bool must_wait() const noexcept;
  /// Blocks until no other thread's transaction is open.
  void wait_for_turn();

  // ---- handles -----------------------------------------------------------------------------
  /// Pins a live page so its memory outlives deletion until unpin(); works on a closed bus too.
  PageRecord& pin(PageId id);
  void unpin(PageRecord& record) noexcept { table_.unpin(record); }

  // ---- bus ---------------------------------------------------------------------------------
  Lsn lsn() const noexcept { return lsn_.load(std::memory_order_acquire); }
  /// Ends writing and lookups (later calls throw Error(Closed)); pinned memory stays valid. A
  /// directory bus writes what is pending, syncs and releases the directory lock; a sync failure
  /// is thrown as Error(Durability) after the bus is closed.
  void close();
  /// Writes a checkpoint of the current state (directory buses) and returns the lsn it covers.
  /// Throws Error(InvalidArgument) for an in-memory bus, Error(Durability) on I/O failure.
  Lsn checkpoint();
  /// A read-only bus holding the state as of `lsn` (replayed from the newest checkpoint at or
  /// before it). Throws Error(HistoryUnavailable) for an in-memory bus or an lsn beyond lsn().
  std::shared_ptr<Bus> at(Lsn lsn);
  /// Every committed delta of page `id` (also a deleted one) in lsn order, read from the log.
  /// Throws Error(HistoryUnavailable) for an in-memory bus, Error(PageNotFound) for an id never used.
  std::vector<HistoryEntry> history(PageId id);
  /// Byte ranges written by the deltas with lsn in (a, b], per page, merged (sorted, overlaps and
  /// touching runs joined). Throws Error(InvalidArgument) unless a <= b <= lsn(),
  /// Error(HistoryUnavailable) for an in-memory bus.
  std::map<PageId, std::vector<Run>> diff(Lsn a, Lsn b);
  bool read_only() const noexcept { return read_only_; }
  /// Checks the bus: internal invariants (no orphan names or info, live pages have data, each
  /// page's last lsn <= the bus lsn); for a directory bus also that every log record checksums,
  /// and that replaying the whole log from lsn 1, and the newest checkpoint plus its tail, both
  /// give exactly the pages in memory (bytes, epochs, last lsns, layout, names, metadata).
  /// Problems are reported, not thrown. Blocks writers while it runs.
  IntegrityReport verify();
  /// Directory ("" for in-memory) and durability mode.
  const std::string& path() const noexcept { return path_; }
  Durability durability() const noexcept { return durability_; }
  /// What recovery found at open (records replayed, torn tail cut).
  struct RecoveryReport {
    Lsn checkpoint_lsn = 0;
    std::uint64_t records_replayed = 0;
    bool truncated_tail = false;
    std::string tail_reason;
  };
  const RecoveryReport& recovery() const noexcept { return recovery_; }
  bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }
  unsigned threads() const noexcept { return pool_.threads(); }
  /// Process-unique id of this bus (never reused), so callers can tell buses apart even after
  /// one is destroyed and another is allocated at the same address.
  std::uint64_t instance_id() const noexcept { return instance_id_; }
  BusStats stats() const noexcept;
  void reset_stats() noexcept;
  MemoryReport memory();

 private:
  void check_open() const;
  void check_writable() const;
  /// The commit lock, taken once no other thread's transaction is open.
  std::unique_lock<std::mutex> lock_turn();
  void check_no_transaction(const char* what) const;
  struct Transaction;
  void undo_locked(Transaction& t) noexcept;
  void txn_note_delta_locked(PageRecord& r, const Delta& d);
  void txn_note_batch_locked(const DeltaBatchView& batch, std::uint64_t timestamp_ns);
  void end_transaction_locked() noexcept;
  void check_location(const std::string& location) const;
  PageRecord& live_locked(PageId id);
  void check_delta_locked(const PageRecord& r, const Delta& d) const;
  void commit_delta_locked(PageRecord& r, Delta& d);
  void apply_delta_locked(PageRecord& r, Delta& d, Lsn lsn);
  /// Appends the record(s) in record_buf_ (lsns up to `last`) to the log, if there is one.
  void log_locked(Lsn last);
  void recover_locked(std::optional<Lsn> until);
  void replay_op_locked(const LogOp& op, Lsn lsn);
  /// Lines describing every difference between this bus's pages and `other`'s.
  template <class Fn>
  void for_each_logged_delta_locked(Lsn first, Lsn last, Fn&& fn);
  void compare_pages_locked(Bus& other, const std::string& what, std::vector<std::string>& problems);
  void count(std::uint64_t deltas, std::uint64_t bytes) noexcept;

  mutable std::mutex mutex_;
  const std::uint64_t instance_id_;
  PageTable table_;
  ThreadPool pool_;
  std::atomic<Lsn> lsn_{0};
  std::atomic<bool> closed_{false};
  std::string path_;
  Durability durability_ = Durability::Flush;
  std::unique_ptr<Log> log_;
  std::vector<std::byte> record_buf_;  // reused encoding buffer for log records
  RecoveryReport recovery_;
  bool read_only_ = false;
  std::unique_ptr<Transaction> txn_;  // the open transaction, if any (guarded by mutex_)
  std::atomic<bool> txn_open_{false};
  std::atomic<std::thread::id> txn_owner_{};
  std::condition_variable txn_done_;
  struct Counters {
    std::atomic<std::uint64_t> deltas_applied{0}, bytes_applied{0}, commits{0}, pages_created{0},
        pages_deleted{0};
  } counters_;
};

}  // namespace mmsb
