#pragma once
/// The pages of one wave batch (Wave::pop_batch: none reaches another), each staged on its own so
/// that built-in recomputes run in parallel lanes while everything that commits (memo, lsn,
/// log, apply, events) stays in canonical order on the committing thread. Reused from wave to
/// wave under the commit lock; the lanes write only their own items.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "mmsb/delta/Delta.hpp"
#include "mmsb/engine/Derivation.hpp"
#include "mmsb/graph/DepGraph.hpp"
#include "mmsb/graph/Wave.hpp"
#include "mmsb/graph/Semiring.hpp"

namespace mmsb {

/// The parents of one wave item in three parallel arrays sharing one size: a wave gathers them
/// for every recomputed page, and three vectors would each check their bounds per parent.
/// Keeps its capacity across reset().
class ParentStage {
 public:
  /// Empties the stage and makes room for `n` parents. Throws std::bad_alloc (then empty).
  void reset(std::size_t n) {
    size_ = 0;
    if (n > capacity_) grow(n);
  }
  /// Appends a parent: its id, record, bytes (its data: device memory for a device page until
  /// host_bytes()) and epoch. Needs the room made by reset().
  void add(PageId id, const PageRecord* record, const std::byte* bytes, Epoch epoch) noexcept {
    records_[size_] = record;
    bytes_[size_] = bytes;
    inputs_[size_] = {id, epoch};
    ++size_;
  }
  /// Replaces each parent's bytes by to_host(record): where the host reads them (a device
  /// page's mirror), for a recompute the host runs. Throws what to_host throws.
  template <class ToHost>
  void host_bytes(ToHost&& to_host) {
    for (std::size_t i = 0; i < size_; ++i) bytes_[i] = to_host(*records_[i]);
  }
  std::span<const PageRecord* const> records() const noexcept { return {records_.get(), size_}; }
  std::span<const std::byte* const> bytes() const noexcept { return {bytes_.get(), size_}; }
  /// Each parent and its epoch: the memo signature, and the provenance of the page's delta.
  std::span<const std::pair<PageId, Epoch>> inputs() const noexcept { return {inputs_.get(), size_}; }
  std::uint64_t capacity_bytes() const noexcept {
    return capacity_ * (sizeof(const PageRecord*) + sizeof(const std::byte*) + sizeof(std::pair<PageId, Epoch>));
  }

 private:
  void grow(std::size_t n) {
    const std::size_t capacity = std::max(n, 2 * capacity_);
    records_ = std::make_unique_for_overwrite<const PageRecord*[]>(capacity);
    bytes_ = std::make_unique_for_overwrite<const std::byte*[]>(capacity);
    inputs_ = std::make_unique_for_overwrite<std::pair<PageId, Epoch>[]>(capacity);
    capacity_ = capacity;
  }
  std::unique_ptr<const PageRecord*[]> records_;
  std::unique_ptr<const std::byte*[]> bytes_;
  std::unique_ptr<std::pair<PageId, Epoch>[]> inputs_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

struct WaveItem {
  PageId id = 0;
  std::uint32_t slot = 0;  ///< WaveNode::slot, to push the children of a changed page
  Derivation* d = nullptr;
  PageRecord* out = nullptr;
  const std::byte* out_bytes = nullptr;  ///< the child's bytes as the host reads them (not on_device)
  SemiringKernel kernel = nullptr;       ///< a reduce's kernel, resolved by WaveBatch::kernel
  bool on_device = false;   ///< a built-in recompute run on the device of its pages
  bool forced = false;      ///< recompute even when the memo matches (stale or forced)
  bool computed = false;    ///< scratch holds the new bytes and delta their diff
  bool changed = false;     ///< the recompute changed the page (replay: the log holds its delta)
  ParentStage parents;
  std::vector<std::byte> scratch;
  Delta delta;
};

class WaveBatch {
 public:
  /// A cleared item for a popped node (buffers keep their capacity).
  WaveItem& add(WaveNode node) {
    if (size_ == items_.size()) items_.emplace_back();
    WaveItem& it = items_[size_++];
    it.id = node.id;
    it.slot = node.slot;
    it.d = nullptr;
    it.out = nullptr;
    it.kernel = nullptr;
    it.on_device = it.forced = it.computed = it.changed = false;
    it.parents.reset(0);
    return it;
  }
  void clear() noexcept { size_ = 0; }
  /// semiring_kernel(s, dtype), remembered for the next call: the reduces of a wave mostly share
  /// one kind, and resolving it per page costs as much as reducing 64 bytes. Throws as
  /// semiring_kernel.
  SemiringKernel kernel(SemiringKind s, DType dtype) {
    if (kernel_ == nullptr || s != kernel_semiring_ || dtype != kernel_dtype_) {
      kernel_ = semiring_kernel(s, dtype);
      kernel_semiring_ = s;
      kernel_dtype_ = dtype;
    }
    return kernel_;
  }
  std::span<WaveItem> items() noexcept { return {items_.data(), size_}; }
  /// Heap bytes the staging buffers hold (bus.memory() counts them as caches).
  std::uint64_t capacity_bytes() const noexcept {
    std::uint64_t b = items_.capacity() * sizeof(WaveItem);
    for (const WaveItem& it : items_) {
      b += it.parents.capacity_bytes() + it.scratch.capacity() +
           it.delta.payload().size();
    }
    return b;
  }

 private:
  std::vector<WaveItem> items_;
  std::size_t size_ = 0;
  SemiringKernel kernel_ = nullptr;
  SemiringKind kernel_semiring_{};
  DType kernel_dtype_{};
};

}  // namespace mmsb
