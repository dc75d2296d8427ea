#pragma once
/// PageTable: ids → records, names → ids, cold info, and the arena that holds page data.
///
/// Invariants: ids are assigned from 1 upward and never reused; records live in fixed chunks and
/// never move, so a PageRecord* stays valid while its page is live or pinned, and for the table's
/// lifetime unless release_dead_records() is used; names are unique among live pages. Thread safety: create/erase/rename/lookup must be serialized by the owner (the bus
/// commit lock); pin/unpin and record atomics may be used from any thread.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mmsb/page/Arena.hpp"
#include "mmsb/page/Page.hpp"
#include "mmsb/page/Placement.hpp"

namespace mmsb {

struct PageTableStats {
  std::uint64_t live_pages = 0;
  std::uint64_t record_bytes = 0;  ///< hot records of every id used so far (ids are never reused)
  std::uint64_t record_slack_bytes = 0;  ///< record slots allocated (in chunks) but not used yet
  std::uint64_t info_bytes = 0;    ///< cold info of typed/named pages (estimated from capacities)
  std::uint64_t name_index_bytes = 0;
  ArenaStats arena;
};

class PageTable {
 public:
  static constexpr std::size_t kChunkRecords = 4096;
  /// Largest page accepted (1 TiB): beyond this a size is a mistake, not a request.
  static constexpr std::uint64_t kMaxPageSize = std::uint64_t{1} << 40;
  /// Largest page id handed out or restored. Ids index the records, so a log or checkpoint
  /// (which may be corrupt or crafted) must not be able to name an arbitrary one: at this bound
  /// the chunk index is 1M pointers, wherever the ids in between went.
  static constexpr PageId kMaxPageId = (PageId{1} << 32) - 1;

  PageTable() = default;
  /// Gives the blocks of pages still holding memory back to their placements (device memory
  /// outlives a table unless returned; the host arena unmaps its own).
  ~PageTable();
  PageTable(const PageTable&) = delete;
  PageTable& operator=(const PageTable&) = delete;

  /// Checks a spec without changing anything; throws Error(InvalidArgument) naming the bad field
  /// (size 0 or too large, shape/dtype inconsistent with size, duplicate or empty name).
  void validate(const PageSpec& spec) const;
  /// The part of validate() that needs no table: size, dtype, shape, name length.
  static void validate_layout(const PageSpec& spec);
  /// Creates a zero-filled page with the next id, in the host arena (`place` 0) or in placement
  /// `place` (from add_placement). Validates first; throws as validate(), Error(InvalidArgument)
  /// once kMaxPageId ids are used, or as the memory's allocate (Error(OutOfMemory)) or
  /// std::bad_alloc, leaving the table unchanged.
  PageRecord& create(const PageSpec& spec, std::uint8_t place = 0);
  /// Recreates a page from a checkpoint: id `id` (>= next_id(); ids in between stay unused),
  /// content `data` (spec.size bytes), `epoch` and `last_lsn`. Throws as create().
  PageRecord& restore(PageId id, const PageSpec& spec, std::span<const std::byte> data, Epoch epoch,
                      Lsn last_lsn, std::uint8_t place = 0);
  /// Registers memory outside the host arena; returns its `place` (1, 2, ...). The table keeps
  /// it alive as long as itself. Throws Error(InvalidArgument) beyond 255 placements.
  std::uint8_t add_placement(std::shared_ptr<Placement> placement);
  /// The placement of a page's `place`, or nullptr for the host arena.
  Placement* placement(std::uint8_t place) const noexcept {
    return place == 0 ? nullptr : placements_[place - 1].get();
  }
  /// Raises next_id() to `id` (ids below were used by pages deleted before a checkpoint, or by
  /// pages of rolled-back transactions), as used-and-deleted ids. A gap costs memory only in the
  /// chunks it shares with used ids: whole chunks of unused ids stay unallocated. Throws
  /// Error(InvalidArgument) for an id past kMaxPageId + 1, std::bad_alloc; either way unchanged.
  void reserve_ids_below(PageId id);
  /// Undoes the create() that returned page `id`, as if it never happened (id reusable). Only for
  /// a commit that failed after creating its page; `id` must be the newest and unpinned.
  void discard_newest(PageId id) noexcept;
  /// Reverses erase() of a page that was pinned across it (a rolled-back transaction): live
  /// again with `info` (its name back in the index).
  void undelete(PageId id, std::optional<PageInfo> info);
  /// The record of a page created (or restored) and not discarded: live, pinned, or deleted while
  /// release_dead_records() is not used; never an id that reserve_ids_below() skipped.
  PageRecord& record(PageId id) noexcept { return slot(id); }
  /// Marks the page deleted, drops its name and info, and frees its data once unpinned.
  /// Throws Error(PageNotFound) if it is not live.
  void erase(PageId id);

  /// Moves live page `r`'s data to a new block of `place` (0: the host arena): allocates it,
  /// calls fill(new data) to copy the bytes in (and anything else that may fail), then swaps the
  /// block in and frees the old one. If the allocation or `fill` throws, the page is as it was.
  /// The caller makes sure nothing holds the old address (no view or export of it).
  void relocate(PageRecord& r, std::uint8_t place, const std::function<void(std::byte*)>& fill);
  /// Names the page's location in its info: creates the info if needed, or drops it when it
  /// would hold nothing but "cpu" (as create() gives none to such a page).
  void set_location(PageId id, const std::string& location);

  /// Live record or nullptr.
  PageRecord* find(PageId id) noexcept {
    if (id == 0 || id >= next_id_) return nullptr;
    PageRecord* chunk = chunks_[(id - 1) / kChunkRecords].get();
    if (chunk == nullptr) [[unlikely]] return nullptr;  // a chunk of skipped ids
    PageRecord& r = chunk[(id - 1) % kChunkRecords];
    return r.live() ? &r : nullptr;
  }
  /// The record of `id`, live or not, or nullptr for an id that has none: 0, never handed out,
  /// or skipped by reserve_ids_below (a page a restored checkpoint no longer held, whose slot
  /// says only "deleted" and holds no size, epoch or data).
  const PageRecord* slot_if_any(PageId id) const noexcept {
    if (id == 0 || id >= next_id_) return nullptr;
    const PageRecord* chunk = chunks_[(id - 1) / kChunkRecords].get();
    if (chunk == nullptr) return nullptr;
    const PageRecord* r = chunk + (id - 1) % kChunkRecords;
    return r->size != 0 ? r : nullptr;  // every page has at least one byte
  }
  /// Asks the CPU to fetch the record of `id` (any id: nothing happens for one with no slot), to
  /// read it or, with kWrite 1, to write it.
  template <int kWrite = 0>
  void prefetch(PageId id) const noexcept {
    if (id - 1 >= next_id_ - 1) return;  // 0 wraps around to the largest value
    if (const PageRecord* chunk = chunks_[(id - 1) / kChunkRecords].get()) {
      __builtin_prefetch(chunk + (id - 1) % kChunkRecords, kWrite);
    }
  }
  /// Live record or Error(PageNotFound) naming the id. Inline: a wave looks up every parent.
  PageRecord& get(PageId id) {
    if (PageRecord* r = find(id)) [[likely]] return *r;
    fail_not_found(id);
  }
  /// Id of the live page with this name, or 0.
  PageId find_name(std::string_view name) const noexcept;
  /// Cold info, or nullptr for an anonymous raw page.
  const PageInfo* info(PageId id) const noexcept;
  PageInfo& info_for_update(PageId id);

  /// Pins keep page memory alive past deletion (views, DLPack exports, handles).
  static void pin(PageRecord& r) noexcept { r.refs.fetch_add(1, std::memory_order_relaxed); }
  /// Drops one pin; the last pin of a deleted page frees its data. Returns false, changing
  /// nothing, when the page holds no pin (an unpin without its pin would otherwise carry into
  /// the deleted bit). Thread safety: any thread, lock-free.
  bool unpin(PageRecord& r) noexcept;

  PageId next_id() const noexcept { return next_id_; }
  std::uint64_t live_count() const noexcept { return live_; }
  /// Calls f(PageRecord&) for every live page in id order. O(live pages + allocated chunks'
  /// slots + skipped or released chunks), not O(largest id).
  template <class F>
  void for_each_live(F&& f) {
    for_each_slot([&](PageRecord& r, PageId) {
      if (r.live()) f(r);
    });
  }
  /// Gives memory of freed pages back to the OS (for the bus's GC): unmaps the arena's wholly
  /// free slabs (Arena::trim; a deleted page still pinned keeps its block and so its slab) and,
  /// when deletions left the name or info index using under a quarter of its hash buckets,
  /// shrinks that bucket array (shown by stats().name_index_bytes; the result counts only the
  /// arena's bytes). Records are not released here (see release_dead_records); ids are never
  /// reused.
  /// Invariant: no page data moves or changes, no live page loses its name or info, and PageInfo
  /// pointers stay valid (a rehash moves no element). Cost: O(1) when nothing is to be released;
  /// a shrink is O(live named pages) and happens only after at least three times as many
  /// deletions, so it is amortized O(1) per deletion.
  /// Thread safety: serialized with create/erase by the owner (it rehashes the indexes); unpin
  /// may run concurrently. Never throws: a shrink is skipped if its new bucket array cannot be
  /// allocated.
  ArenaTrim trim() noexcept;
  /// Releases the records of deleted pages, a chunk of kChunkRecords ids at a time: a chunk whose
  /// ids are all used, deleted and unpinned, their data freed (bit kFreedBit, set after the free
  /// by whichever thread did it). Its ids then read as skipped ones: find() and slot_if_any()
  /// return nullptr, get() says "deleted". Only for an owner that never reads a deleted page's
  /// record after its last pin (the bus without a log: no time travel, and provenance answers
  /// from its index). Returns the bytes released. Random deletions leave chunks partly live; pages
  /// created and deleted together (temporaries) free theirs.
  /// Thread safety: as trim(); unpin may run concurrently (a record whose last unpin has not set
  /// kFreedBit yet keeps its chunk). Cost: O(chunks that became wholly deleted since the last
  /// call, times kChunkRecords). Never throws.
  std::uint64_t release_dead_records() noexcept;
  /// O(1) unless the cold info changed since the last call (then one walk over it). Not
  /// thread-safe against itself (the bus calls it under its commit lock).
  PageTableStats stats() const;
  /// Appends a line to `problems` for every broken internal invariant (live pages without data,
  /// names or info left behind by deleted pages, counts that disagree). Read-only.
  void check_consistency(std::vector<std::string>& problems);

 private:
  [[noreturn]] void fail_not_found(PageId id) const;
  PageRecord& slot(PageId id) noexcept {
    return chunks_[(id - 1) / kChunkRecords][(id - 1) % kChunkRecords];
  }
  /// f(PageRecord&, PageId) for the slot of every id below next_id_ in an allocated chunk, in
  /// id order.
  template <class F>
  void for_each_slot(F&& f) {
    for (std::size_t c = 0; c < chunks_.size(); ++c) {
      if (!chunks_[c]) continue;
      const PageId first = c * kChunkRecords + 1;
      const auto n = static_cast<std::size_t>(std::min<PageId>(kChunkRecords, next_id_ - first));
      for (std::size_t i = 0; i < n; ++i) f(chunks_[c][i], first + i);
    }
  }
  /// Allocates the chunk of next_id_ if it is missing (past the end, or skipped whole by
  /// reserve_ids_below); its slots below next_id_ become used-and-deleted ids. Throws
  /// std::bad_alloc, leaving the table unchanged.
  void ensure_next_chunk();
  static void mark_skipped(PageRecord& r, PageId id) noexcept;
  /// Counts `n` more deleted ids in chunk `c` (negative: undeleted), noting a chunk wholly deleted.
  void count_dead(std::size_t c, int n) noexcept;
  void dedupe_dead_chunks() noexcept;
  void free_data(PageRecord& r) noexcept;
  void release_block(std::uint8_t place, const Arena::Block& block) noexcept;

  std::vector<std::unique_ptr<PageRecord[]>> chunks_;  // null: skipped ids only, or released
  std::size_t skipped_chunks_ = 0;                      // the null ones
  std::vector<std::uint16_t> dead_;                     // per chunk: deleted (or skipped) ids in it
  std::vector<std::size_t> dead_chunks_;                // chunks whose count reached kChunkRecords
  PageId next_id_ = 1;
  std::uint64_t live_ = 0;
  std::unordered_map<std::string, PageId> names_;
  std::unordered_map<PageId, PageInfo> infos_;
  // stats()'s count of the cold containers, valid until a change to them (set_metadata, names,
  // typed pages): memory() and gc() then cost O(1) instead of a walk over every such page.
  mutable bool cold_dirty_ = true;
  mutable std::uint64_t cold_info_bytes_ = 0;
  mutable std::uint64_t cold_name_bytes_ = 0;
  Arena arena_;
  std::vector<std::shared_ptr<Placement>> placements_;  // capacity 255 once used: slots never move
};

}  // namespace mmsb
