#pragma once
/// Bus: the commit path over a PageTable. Every change is a validated delta that bumps the lsn
/// and the target page's epoch; failed calls change nothing.
///
/// Commit order: validate -> (log append: the log layer hooks in here) -> apply bytes -> epochs.
/// Thread safety: every member may be called from any thread. Writers and structural changes are
/// serialized by one commit mutex; lsn(), stats() and record atomics are readable without it.
/// Page memory read through views is not synchronized with writers (as with NumPy arrays shared
/// between threads); snapshot() and read() give consistent copies.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mmsb/core/Types.hpp"
#include "mmsb/delta/Delta.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/page/PageTable.hpp"
#include "mmsb/parallel/ThreadPool.hpp"

namespace mmsb {

struct BusOptions {
  unsigned threads = 0;  ///< threads for batch apply; 0 = one per hardware thread
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
  explicit Bus(BusOptions options = {});
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

  // ---- handles -----------------------------------------------------------------------------
  /// Pins a live page so its memory outlives deletion until unpin(); works on a closed bus too.
  PageRecord& pin(PageId id);
  void unpin(PageRecord& record) noexcept { table_.unpin(record); }

  // ---- bus ---------------------------------------------------------------------------------
  Lsn lsn() const noexcept { return lsn_.load(std::memory_order_acquire); }
  /// Ends writing and lookups (later calls throw Error(Closed)); pinned memory stays valid.
  void close();
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
  void check_location(const std::string& location) const;
  PageRecord& live_locked(PageId id);
  void check_delta_locked(const PageRecord& r, const Delta& d) const;
  void commit_delta_locked(PageRecord& r, Delta& d);
  void count(std::uint64_t deltas, std::uint64_t bytes) noexcept;

  mutable std::mutex mutex_;
  const std::uint64_t instance_id_;
  PageTable table_;
  ThreadPool pool_;
  std::atomic<Lsn> lsn_{0};
  std::atomic<bool> closed_{false};
  struct Counters {
    std::atomic<std::uint64_t> deltas_applied{0}, bytes_applied{0}, commits{0}, pages_created{0},
        pages_deleted{0};
  } counters_;
};

}  // namespace mmsb
