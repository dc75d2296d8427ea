#pragma once
/// How one derived page is kept up to date: its data parents (in order), optional weights, the
/// recompute, and the memo signature (the parents' epochs at its last recompute).
#include <algorithm>
#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>
#include <vector>

#include "mmsb/graph/Recompute.hpp"
#include "mmsb/page/Page.hpp"

namespace mmsb {

/// A host-language recompute: fills `out` (staged with the child's current bytes) from the
/// parents' pages, in the order of Derivation::parents; `inputs` holds each parent's bytes as the
/// host reads them (a device page's refreshed mirror: never read a parent's `data` directly). It
/// runs on the committing thread under the bus commit lock and must not call into the bus. Any
/// exception aborts the wave, which is rolled back: an Error or other std::exception is reported
/// as Error(Propagation) naming the page; an exception of any other type reaches the caller
/// unchanged (the Python bindings carry KeyboardInterrupt and SystemExit that way).
using RecomputeCallable = std::function<void(std::span<std::byte> out, std::span<const PageRecord* const> parents,
                                             std::span<const std::byte* const> inputs)>;

/// Fields in the order a wave reads them (parents and memo for the memo check, then weights and
/// the recompute's kind), so that one page's lookup touches as few cache lines as it can.
struct Derivation {
  std::vector<PageId> parents;
  std::vector<Epoch> memo;      ///< parents' epochs at the last recompute; empty: never computed
  std::vector<double> weights;  ///< empty, or one per parent
  RecomputeSpec fn;
  RecomputeCallable callable;   ///< set for RecomputeKind::Callable once registered
  bool implicit = false;        ///< made by a device_sync edge (a copy of its one parent)
  /// `parents` as kept in the bus's ParentLists, for the provenance of the deltas it computes:
  /// null until a wave first needs it; whatever changes `parents` in place must reset it.
  const std::vector<PageId>* kept_parents = nullptr;

  /// A Callable whose function is not registered in this process (e.g. after mmsb.open).
  bool missing_callable() const noexcept { return fn.kind == RecomputeKind::Callable && !callable; }
};

/// The derived pages of a bus by id: a map, plus an array indexed by page id (below kDenseIds)
/// that a wave's lookups use (one load instead of a hash probe per recomputed page; page ids are
/// dense, unless a log skips far ahead).
/// Every change goes through insert_or_assign and erase, which keep both in step; map nodes never
/// move, so the array's pointers stay valid until their entry is erased.
/// Thread safety: none (the bus commit lock).
class DerivationTable {
 public:
  using Map = std::unordered_map<PageId, Derivation>;

  /// The derivation of page `id`, or nullptr.
  Derivation* get(PageId id) const noexcept {
    if (id < by_id_.size()) [[likely]] return by_id_[id];
    return sparse_ ? sparse_get(id) : nullptr;
  }
  Map::iterator find(PageId id) { return map_.find(id); }
  Map::const_iterator find(PageId id) const { return map_.find(id); }
  Map::iterator begin() noexcept { return map_.begin(); }
  Map::iterator end() noexcept { return map_.end(); }
  Map::const_iterator begin() const noexcept { return map_.begin(); }
  Map::const_iterator end() const noexcept { return map_.end(); }
  std::size_t size() const noexcept { return map_.size(); }
  std::size_t count(PageId id) const { return map_.count(id); }
  /// The derivation of a page known to be derived; throws std::out_of_range otherwise.
  Derivation& at(PageId id) { return map_.at(id); }
  const Derivation& at(PageId id) const { return map_.at(id); }
  /// Bytes of the id array (memory accounting).
  std::uint64_t index_bytes() const noexcept { return by_id_.capacity() * sizeof(Derivation*); }

  /// Throws std::bad_alloc with nothing changed.
  Map::iterator insert_or_assign(PageId id, Derivation d) {
    const bool dense = id < kDenseIds;
    if (dense && id >= by_id_.size()) {
      by_id_.resize(std::min<std::size_t>(kDenseIds, std::max<std::size_t>(id + 1, 2 * by_id_.size())), nullptr);
    }
    const auto it = map_.insert_or_assign(id, std::move(d)).first;
    if (dense) {
      by_id_[id] = &it->second;
    } else {
      sparse_ = true;
    }
    return it;
  }
  std::size_t erase(PageId id) noexcept {
    if (id < by_id_.size()) by_id_[id] = nullptr;
    return map_.erase(id);
  }
  Map::iterator erase(Map::iterator it) noexcept {
    if (it->first < by_id_.size()) by_id_[it->first] = nullptr;
    return map_.erase(it);
  }

 private:
  // Ids below this are looked up in by_id_ (the wave's hot path): at most 32 MiB of it, however
  // large an id a log names; the few pages above it, if any, through the map.
  static constexpr PageId kDenseIds = PageId{1} << 22;

  Derivation* sparse_get(PageId id) const noexcept {
    const auto it = map_.find(id);
    return it == map_.end() ? nullptr : const_cast<Derivation*>(&it->second);
  }

  Map map_;
  std::vector<Derivation*> by_id_;
  bool sparse_ = false;  // some derivation has an id >= kDenseIds
};

}  // namespace mmsb
