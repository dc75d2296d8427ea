#pragma once
// Internal to the graph layer: the canonical order of DepGraph's node slots as increasing keys
// with gaps, so that placing one node does not shift every node after it.
//
// The slots sit in an array indexed by key (a packed-memory array): a node placed between two
// others takes the hole just before its successor when there is one; otherwise the smallest
// aligned window around the place whose density stays under its bound (1 for 64 keys, falling to
// 1/2 for the whole array) is spread out evenly, and when even the whole array is too dense it is
// laid out again at twice its node count. Placing after the last key just grows the array, so
// appending costs O(1) amortized and a placement elsewhere O(log^2 n) amortized. A max tree over
// the ids by key answers "the first node at or after key k whose id exceeds x" in O(log n): where
// Kahn's smallest-id-first order puts a new sink.
//
// bound() stays within a small multiple of size() (an array under a quarter full is laid out
// again), so a bitset over the keys (Wave) stays proportional to the node count. Not thread
// safe; DepGraph::Impl owns one.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "mmsb/core/Types.hpp"

namespace mmsb::graph_detail {

class CanonicalOrder {
 public:
  using Index = std::uint32_t;  ///< a DepGraph node slot
  using Key = std::uint32_t;
  static constexpr Key kNoKey = std::numeric_limits<Key>::max();
  static constexpr Index kHole = std::numeric_limits<Index>::max();

  /// Room for one more slot, so that add_slot() cannot throw.
  void reserve_slot();
  /// A new slot, not placed (reserve_slot() first).
  void add_slot() noexcept { key_.push_back(kNoKey); }

  Key key(Index slot) const noexcept { return key_[slot]; }
  bool placed(Index slot) const noexcept { return key_[slot] != kNoKey; }
  /// Every key is below it.
  Key bound() const noexcept { return static_cast<Key>(slot_at_.size()); }
  std::size_t size() const noexcept { return count_; }
  /// The slot at key `k` (< bound()), or kHole.
  Index slot_at(Key k) const noexcept { return slot_at_[k]; }
  /// The id of the node at key `k` (< bound()), or 0 for a hole.
  PageId id_at(Key k) const noexcept { return tree_[leaves_ + k]; }

  /// Lays out `slots` (with their `ids`) in this order, one key each, unplacing every other slot.
  void assign(std::span<const Index> slots, std::span<const PageId> ids);
  /// The first key >= `from` holding an id above `id`, or bound() if there is none.
  Key first_above(Key from, PageId id) const noexcept;
  /// Places `slot` (id `id`) after every node at a key below `at` and before the node at `at`
  /// (at == bound(): after all). Throws only std::bad_alloc, before changing anything.
  void insert_before(Key at, Index slot, PageId id);
  /// Unplaces `slot` (placed).
  void erase(Index slot) noexcept;
  /// The ids in order.
  std::vector<PageId> ids() const;
  std::uint64_t memory_bytes() const noexcept;

 private:
  std::vector<Key> key_;        // per slot: its key, or kNoKey
  std::vector<Index> slot_at_;  // per key: its slot, or kHole
  // Max tree over the ids by key: leaves at [leaves_, 2 * leaves_), 0 for holes and past bound().
  std::vector<PageId> tree_;
  std::size_t leaves_ = 0;
  std::size_t count_ = 0;
  std::vector<std::pair<Index, PageId>> gather_;  // spread scratch: a window's nodes in order

  void set_leaf(Key k, PageId id) noexcept;
  void rebuild_tree(std::size_t lo, std::size_t hi) noexcept;  // inner nodes above leaves [lo, hi)
  // Spreads gather_ evenly over keys [lo, hi) (at least gather_.size() of them).
  void spread(Key lo, Key hi) noexcept;
  // Gathers the nodes at keys [lo, hi) into gather_, `slot` inserted before key `at` unless it
  // is kHole. Throws (std::bad_alloc) before changing anything but gather_.
  void gather(Key lo, Key hi, Key at, Index slot, PageId id);
  // A tree of at least `keys` leaves holding the current ids (all or nothing).
  void grow_tree(std::size_t keys);
  // Lays every node (and `slot` before `at`, unless kHole) out again over twice their number.
  void relayout(Key at, Index slot, PageId id);
};

}  // namespace mmsb::graph_detail
