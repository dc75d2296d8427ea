// CanonicalOrder: DepGraph's canonical order as a packed-memory array of slots with a max-id tree.
#include "CanonicalOrder.hpp"

#include <algorithm>
#include <bit>

namespace mmsb::graph_detail {

namespace {
constexpr std::size_t kWindow = 64;  // the smallest window a placement spreads out
}  // namespace

void CanonicalOrder::reserve_slot() {
  if (key_.size() == key_.capacity()) key_.reserve(std::max<std::size_t>(16, 2 * key_.capacity()));
}

void CanonicalOrder::set_leaf(Key k, PageId id) noexcept {
  std::size_t i = leaves_ + k;
  tree_[i] = id;
  // An ancestor that keeps its value leaves every node above it as it was.
  for (i >>= 1; i >= 1; i >>= 1) {
    const PageId m = std::max(tree_[2 * i], tree_[2 * i + 1]);
    if (tree_[i] == m) break;
    tree_[i] = m;
  }
}

void CanonicalOrder::rebuild_tree(std::size_t lo, std::size_t hi) noexcept {
  if (lo >= hi) return;
  for (std::size_t l = (leaves_ + lo) >> 1, r = (leaves_ + hi - 1) >> 1; l >= 1; l >>= 1, r >>= 1) {
    for (std::size_t i = l; i <= r; ++i) tree_[i] = std::max(tree_[2 * i], tree_[2 * i + 1]);
  }
}

void CanonicalOrder::grow_tree(std::size_t keys) {
  const std::size_t leaves = std::max(kWindow, std::bit_ceil(keys));
  std::vector<PageId> tree(2 * leaves, 0);
  std::copy(tree_.begin() + static_cast<std::ptrdiff_t>(leaves_),
            tree_.begin() + static_cast<std::ptrdiff_t>(leaves_ + bound()), tree.begin() + static_cast<std::ptrdiff_t>(leaves));
  tree_.swap(tree);
  leaves_ = leaves;
  rebuild_tree(0, bound());
}

// Ensuring the canonical order runs Kahn over the whole graph anyway; this only lays it out.
void CanonicalOrder::assign(std::span<const Index> slots, std::span<const PageId> ids) {
  leaves_ = std::max(kWindow, std::bit_ceil(slots.size()));
  tree_.assign(2 * leaves_, 0);
  slot_at_.assign(slots.begin(), slots.end());
  std::fill(key_.begin(), key_.end(), kNoKey);
  for (std::size_t k = 0; k < slots.size(); ++k) {
    key_[slots[k]] = static_cast<Key>(k);
    tree_[leaves_ + k] = ids[k];
  }
  count_ = slots.size();
  rebuild_tree(0, slots.size());
}

CanonicalOrder::Key CanonicalOrder::first_above(Key from, PageId id) const noexcept {
  const Key n = bound();
  if (from >= n) return n;
  // Up from the leaf while no subtree to the right of the path holds a larger id, then down to
  // the leftmost such leaf. Leaves past bound() hold 0, so the answer is a real key.
  std::size_t i = leaves_ + from;
  while (tree_[i] <= id) {
    while ((i & 1) != 0) i >>= 1;  // a right child: its parent's right part is done too
    if (i == 0) return n;
    ++i;
  }
  while (i < leaves_) i = tree_[2 * i] > id ? 2 * i : 2 * i + 1;
  return static_cast<Key>(i - leaves_);
}

void CanonicalOrder::gather(Key lo, Key hi, Key at, Index slot, PageId id) {
  gather_.clear();
  gather_.reserve(hi - lo + 1);
  for (Key k = lo; k < hi; ++k) {
    if (k == at && slot != kHole) gather_.emplace_back(slot, id);
    if (slot_at_[k] != kHole) gather_.emplace_back(slot_at_[k], id_at(k));
  }
  if (at >= hi && slot != kHole) gather_.emplace_back(slot, id);
}

void CanonicalOrder::spread(Key lo, Key hi) noexcept {
  const std::size_t n = gather_.size(), len = hi - lo;
  std::fill(slot_at_.begin() + lo, slot_at_.begin() + hi, kHole);
  std::fill(tree_.begin() + static_cast<std::ptrdiff_t>(leaves_ + lo),
            tree_.begin() + static_cast<std::ptrdiff_t>(leaves_ + hi), PageId{0});
  for (std::size_t i = 0; i < n; ++i) {
    const auto k = static_cast<Key>(lo + i * len / n);
    slot_at_[k] = gather_[i].first;
    key_[gather_[i].first] = k;
    tree_[leaves_ + k] = gather_[i].second;
  }
  rebuild_tree(lo, hi);
}

void CanonicalOrder::relayout(Key at, Index slot, PageId id) {
  const std::size_t n = count_ + (slot != kHole ? 1 : 0);
  const std::size_t len = std::max(kWindow, 2 * n);
  gather(0, bound(), at, slot, id);
  std::vector<Index> slot_at(len, kHole);
  std::vector<PageId> tree(2 * std::bit_ceil(len), 0);
  slot_at_.swap(slot_at);
  tree_.swap(tree);
  leaves_ = tree_.size() / 2;
  count_ = n;
  spread(0, static_cast<Key>(len));
}

void CanonicalOrder::insert_before(Key at, Index slot, PageId id) {
  const Key n = bound();
  auto place = [&](Key k) {
    slot_at_[k] = slot;
    key_[slot] = k;
    set_leaf(k, id);
    ++count_;
  };
  // A hole right before `at` lies after the node before `at`, whatever lies between.
  if (at > 0 && slot_at_[at - 1] == kHole) return place(at - 1);
  if (at == n) {
    if (slot_at_.size() == slot_at_.capacity()) slot_at_.reserve(std::max(kWindow, 2 * slot_at_.capacity()));
    if (std::size_t{n} + 1 > leaves_) grow_tree(std::size_t{n} + 1);
    slot_at_.push_back(kHole);
    return place(n);
  }
  // The smallest aligned window around `at` that stays under its density bound once it holds
  // one more node: 1 for the smallest, falling evenly to 1/2 for the whole array.
  const auto levels = static_cast<std::size_t>(std::max(1, std::countr_zero(std::max(kWindow, std::bit_ceil(std::size_t{n})) / kWindow)));
  for (std::size_t w = kWindow, level = 0;; w *= 2, ++level) {
    const std::size_t lo = at / w * w, hi = std::min<std::size_t>(lo + w, n);
    std::size_t used = 0;
    for (std::size_t k = lo; k < hi; ++k) used += slot_at_[k] != kHole;
    if ((used + 1) * 2 * levels <= (2 * levels - std::min(level, levels)) * (hi - lo)) {
      gather(static_cast<Key>(lo), static_cast<Key>(hi), at, slot, id);
      ++count_;
      spread(static_cast<Key>(lo), static_cast<Key>(hi));
      return;
    }
    if (lo == 0 && hi == n) break;
  }
  relayout(at, slot, id);
}

void CanonicalOrder::erase(Index slot) noexcept {
  const Key k = key_[slot];
  key_[slot] = kNoKey;
  slot_at_[k] = kHole;
  set_leaf(k, 0);
  --count_;
  while (!slot_at_.empty() && slot_at_.back() == kHole) slot_at_.pop_back();
  if (slot_at_.size() > kWindow && count_ * 4 < slot_at_.size()) {
    try {
      relayout(0, kHole, 0);
    } catch (...) {  // out of memory: the order stays sparse, and just as correct
    }
  }
}

std::vector<PageId> CanonicalOrder::ids() const {
  std::vector<PageId> out;
  out.reserve(count_);
  for (Key k = 0; k < bound(); ++k) {
    if (slot_at_[k] != kHole) out.push_back(id_at(k));
  }
  return out;
}

std::uint64_t CanonicalOrder::memory_bytes() const noexcept {
  return (key_.capacity() + slot_at_.capacity()) * sizeof(Key) + tree_.capacity() * sizeof(PageId) +
         gather_.capacity() * sizeof(gather_[0]);
}

}  // namespace mmsb::graph_detail
