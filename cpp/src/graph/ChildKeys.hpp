#pragma once
// Internal to the graph layer: every node's children as canonical order keys, in one array
// indexed by slot (compressed sparse rows), for waves that visit a large part of the graph. A
// wave otherwise reads each popped node's out-edge vector (its own heap block) and then each
// child's key: on the 10k-page DAG of bench_propagation that scheduling was 16% of the wave's
// samples, and reading the rows instead made it 28% faster alone and the wave 7% faster
// (alternated runs, 2026-11-30).
#include <cstdint>
#include <span>
#include <vector>

namespace mmsb::graph_detail {

/// Invariant while current(): for each slot s, keys_of(s) holds the order key of every child of
/// s (all edge kinds), the smallest first, and has_control(s) says whether one of them is a
/// control child. Any change to the edges or to the order keys must invalidate() it.
/// Thread safety: none (the graph's).
class ChildKeys {
 public:
  bool current() const noexcept { return current_; }
  void invalidate() noexcept { current_ = false; }

  /// Starts a rebuild for `slots` slots; then add_row(s, ...) for every slot in order, then
  /// finish(). Throws std::bad_alloc (then not current).
  void begin(std::size_t slots) {
    current_ = false;
    offsets_.assign(1, 0);
    offsets_.reserve(slots + 1);
    control_.assign(slots, 0);
    keys_.clear();
  }
  /// The next slot's child keys (any order) and whether one of them is a control child.
  void add_row(std::span<const std::uint32_t> keys, bool control) {
    const std::size_t first = keys_.size();
    keys_.insert(keys_.end(), keys.begin(), keys.end());
    std::uint32_t* row = keys_.data() + first;
    for (std::size_t i = 1; i < keys.size(); ++i) {
      if (row[i] < row[0]) std::swap(row[i], row[0]);
    }
    control_[offsets_.size() - 1] = control ? 1 : 0;
    offsets_.push_back(static_cast<std::uint32_t>(keys_.size()));
  }
  void finish() noexcept { current_ = true; }

  std::span<const std::uint32_t> keys_of(std::uint32_t slot) const noexcept {
    return {keys_.data() + offsets_[slot], keys_.data() + offsets_[slot + 1]};
  }
  bool has_control(std::uint32_t slot) const noexcept { return control_[slot] != 0; }

  /// Heap bytes held.
  std::uint64_t memory_bytes() const noexcept {
    return (offsets_.capacity() + keys_.capacity()) * sizeof(std::uint32_t) + control_.capacity();
  }

 private:
  std::vector<std::uint32_t> offsets_;  // slots + 1: row s is keys_[offsets_[s], offsets_[s + 1])
  std::vector<std::uint32_t> keys_;
  std::vector<std::uint8_t> control_;
  bool current_ = false;
};

}  // namespace mmsb::graph_detail
