#include "mmsb/cuda/DevicePool.hpp"

#include <algorithm>
#include <bit>
#include <limits>

#include "mmsb/core/Error.hpp"

namespace mmsb::cuda {

DevicePool::DevicePool(SlabSource source) : source_(std::move(source)) {
  partial_.resize(class_of(kLargeThreshold) + 1);
}

DevicePool::~DevicePool() {
  for (Slab& s : slabs_) {
    if (s.base != nullptr) source_.release(s.base);
  }
  // Large blocks still out are the owners' to release; a pool outliving them is the contract.
}

std::uint16_t DevicePool::class_of(std::uint64_t bytes) noexcept {
  const std::uint64_t units = (bytes + kAlignment - 1) / kAlignment;
  return static_cast<std::uint16_t>(std::bit_width(units <= 1 ? 0 : units - 1));
}

std::uint64_t DevicePool::block_size(std::uint64_t bytes) noexcept {
  if (bytes > kLargeThreshold) return (bytes + kAlignment - 1) / kAlignment * kAlignment;
  return class_bytes(class_of(bytes));
}

std::uint32_t DevicePool::new_slab_locked(std::uint16_t c) {
  const auto blocks = static_cast<std::uint32_t>(kSlabBytes / class_bytes(c));
  // Bookkeeping first (it may throw bad_alloc), device memory last: a refusal changes nothing.
  auto slot = static_cast<std::uint32_t>(
      std::find_if(slabs_.begin(), slabs_.end(), [](const Slab& s) { return s.base == nullptr; }) - slabs_.begin());
  if (slot == slabs_.size()) slabs_.emplace_back();
  Slab& s = slabs_[slot];
  s.free.reserve(blocks);  // release() then never allocates
  partial_[c].reserve(partial_[c].size() + 1);
  void* base = source_.allocate(kSlabBytes);
  if (base == nullptr) {
    fail(ErrorCode::OutOfMemory, source_.name, " refused a ", kSlabBytes >> 20, " MiB slab for ",
         class_bytes(c), "-byte blocks (", stats_.reserved_bytes >> 20, " MiB already reserved)");
  }
  s.base = static_cast<std::byte*>(base);
  s.size_class = c;
  s.live = 0;
  s.free.clear();
  for (std::uint32_t i = blocks; i-- > 0;) s.free.push_back(i);  // lowest address handed out first
  partial_[c].push_back(slot);
  stats_.reserved_bytes += kSlabBytes;
  ++stats_.slabs;
  return slot;
}

DevicePool::Block DevicePool::allocate(std::uint64_t bytes) {
  if (bytes == 0) fail(ErrorCode::InvalidArgument, "a device block needs at least 1 byte");
  // Rounded up to the alignment, a size this close to 2^64 would wrap to a tiny block.
  if (bytes > std::numeric_limits<std::uint64_t>::max() - kAlignment) {
    fail(ErrorCode::OutOfMemory, source_.name, " cannot hold a block of ", bytes, " bytes");
  }
  std::lock_guard g(mutex_);
  if (bytes > kLargeThreshold) {
    const std::uint64_t size = block_size(bytes);
    void* p = source_.allocate(size);
    if (p == nullptr) {
      fail(ErrorCode::OutOfMemory, source_.name, " refused ", size, " bytes for a page of ", bytes, " bytes (",
           stats_.reserved_bytes >> 20, " MiB already reserved)");
    }
    try {
      source_.zero(p, size);
    } catch (...) {
      source_.release(p);
      throw;
    }
    stats_.reserved_bytes += size;
    stats_.allocated_bytes += size;
    stats_.requested_bytes += bytes;
    ++stats_.live_blocks;
    ++stats_.large_blocks;
    return {static_cast<std::byte*>(p), bytes, kLargeClass, 0};
  }
  const std::uint16_t c = class_of(bytes);
  const std::uint32_t slot = partial_[c].empty() ? new_slab_locked(c) : partial_[c].back();
  Slab& s = slabs_[slot];
  std::byte* data = s.base + static_cast<std::uint64_t>(s.free.back()) * class_bytes(c);
  source_.zero(data, class_bytes(c));  // before taking it: a failure leaves the block free
  s.free.pop_back();
  if (s.free.empty()) partial_[c].pop_back();
  ++s.live;
  stats_.allocated_bytes += class_bytes(c);
  stats_.requested_bytes += bytes;
  ++stats_.live_blocks;
  return {data, bytes, c, slot};
}

void DevicePool::release(const Block& block) noexcept {
  if (block.data == nullptr) return;
  std::lock_guard g(mutex_);
  --stats_.live_blocks;
  stats_.requested_bytes -= block.requested;
  if (block.size_class == kLargeClass) {
    const std::uint64_t size = block_size(block.requested);
    source_.release(block.data);
    stats_.reserved_bytes -= size;
    stats_.allocated_bytes -= size;
    --stats_.large_blocks;
    return;
  }
  Slab& s = slabs_[block.slab];
  const std::uint64_t size = class_bytes(block.size_class);
  if (s.free.empty()) partial_[block.size_class].push_back(block.slab);  // capacity reserved
  s.free.push_back(static_cast<std::uint32_t>((block.data - s.base) / static_cast<std::ptrdiff_t>(size)));
  --s.live;
  stats_.allocated_bytes -= size;
}

std::uint64_t DevicePool::trim() noexcept {
  std::lock_guard g(mutex_);
  std::uint64_t freed = 0;
  for (std::uint32_t slot = 0; slot < slabs_.size(); ++slot) {
    Slab& s = slabs_[slot];
    if (s.base == nullptr || s.live != 0) continue;
    auto& partial = partial_[s.size_class];
    partial.erase(std::remove(partial.begin(), partial.end(), slot), partial.end());
    source_.release(s.base);
    s.base = nullptr;
    s.free.clear();
    s.free.shrink_to_fit();
    stats_.reserved_bytes -= kSlabBytes;
    --stats_.slabs;
    freed += kSlabBytes;
  }
  return freed;
}

DevicePoolStats DevicePool::stats() const {
  std::lock_guard g(mutex_);
  return stats_;
}

}  // namespace mmsb::cuda
