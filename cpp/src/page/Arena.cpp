#include "mmsb/page/Arena.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <new>

#include "mmsb/core/Error.hpp"
#include "mmsb/core/Prefaulter.hpp"

namespace mmsb {
namespace {
constexpr std::uint64_t kPage = 4096;
constexpr std::uint16_t kLinearClasses = 64;  // 64 B .. 4 KiB in 64 B steps
constexpr std::uint64_t kLinearLimit = 4096;
constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t to) { return (v + to - 1) / to * to; }
}  // namespace

// Classes: 64-byte steps up to 4 KiB (exact for the common small pages), then four classes per
// power of two up to kLargeThreshold, so rounding slack stays below 25% (and 0 for multiples of 64
// below 4 KiB).
std::uint16_t Arena::class_index(std::uint64_t bytes) noexcept {
  if (bytes <= kLinearLimit) return static_cast<std::uint16_t>((bytes + 63) / 64 - 1);
  const unsigned k = 63 - static_cast<unsigned>(std::countl_zero(bytes - 1));  // 2^k < bytes <= 2^(k+1)
  const std::uint64_t step = (std::uint64_t{1} << k) / 4;
  const std::uint64_t sub = (bytes - (std::uint64_t{1} << k) + step - 1) / step - 1;
  return static_cast<std::uint16_t>(kLinearClasses + (k - 12) * 4 + sub);
}

std::uint64_t Arena::class_block_size(std::uint16_t index) noexcept {
  if (index < kLinearClasses) return (std::uint64_t{index} + 1) * 64;
  const unsigned rel = index - kLinearClasses;
  const unsigned k = 12 + rel / 4;
  const std::uint64_t step = (std::uint64_t{1} << k) / 4;
  return (std::uint64_t{1} << k) + (rel % 4 + 1) * step;
}

std::uint64_t Arena::class_size_for(std::uint64_t bytes) noexcept {
  if (bytes > kLargeThreshold) return round_up(bytes, kPage);
  return class_block_size(class_index(bytes));
}

std::byte* Arena::map_bytes(std::uint64_t bytes) {
  // No MAP_NORESERVE: the kernel's overcommit check then refuses sizes that cannot be backed,
  // which turns an absurd request into a clean OutOfMemory instead of a later SIGBUS/OOM kill.
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    fail(ErrorCode::OutOfMemory, "cannot map ", bytes, " bytes for page data (", std::strerror(errno),
         "); free pages or lower the page size");
  }
  return static_cast<std::byte*>(p);
}

// A slab aligned to its size, so a kernel with transparent huge pages (madvise mode) can back it
// with one huge page: random deltas over many small pages then miss the TLB far less. A bare C++
// scatter over 64 MiB measured ~15% faster with it; where THP is off this is a no-op.
std::byte* Arena::map_slab() {
  std::byte* raw = map_bytes(2 * kSlabBytes);
  const auto addr = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (addr + kSlabBytes - 1) & ~(std::uintptr_t{kSlabBytes} - 1);
  const std::size_t head = aligned - addr;
  if (head > 0) ::munmap(raw, head);
  ::munmap(reinterpret_cast<std::byte*>(aligned) + kSlabBytes, kSlabBytes - head);
  ::madvise(reinterpret_cast<void*>(aligned), kSlabBytes, MADV_HUGEPAGE);  // a hint; may be ignored
  return reinterpret_cast<std::byte*>(aligned);
}

Arena::~Arena() {
  for (const Slab& s : slabs_) {
    if (s.base != nullptr) ::munmap(s.base, kSlabBytes);
  }
  for (const auto& [data, mapped] : large_) ::munmap(data, mapped);
}

// Bookkeeping grows before the mapping, so a refusal (OutOfMemory or bad_alloc) leaves the arena
// as it was.
void Arena::add_slab(SizeClass& c, std::uint16_t index) {
  if (free_slot_ == kNoSlab && slabs_.size() == slabs_.capacity()) {
    slabs_.reserve(std::max<std::size_t>(16, 2 * slabs_.size()));
  }
  // A class that filled a slab is being filled in bulk (pages created by the thousand, or
  // replayed): its next slab is faulted in on the helper thread, so that the first deltas into
  // its pages do not stop for the kernel to zero it (on this VM a 64 MiB page set faulted in by a
  // stream of 4096-row batches took a quarter of the stream's time). A class's first slab is
  // left to its writers: a small bus does not pay for memory it may never touch.
  const bool bulk = c.bump_slab != kNoSlab;
  std::byte* base = map_slab();
  if (bulk) Prefaulter::shared().populate_later(base, kSlabBytes);
  std::uint32_t slot = free_slot_;
  if (slot != kNoSlab) {
    free_slot_ = slabs_[slot].live;
  } else {
    slot = static_cast<std::uint32_t>(slabs_.size());
    slabs_.emplace_back();
  }
  slabs_[slot] = Slab{base, 0, index};
  ++empty_slabs_;  // until the caller takes its first block
  stats_.reserved_bytes += kSlabBytes;
  c.bump = base;
  c.bump_end = base + (kSlabBytes / c.block_size) * c.block_size;
  c.bump_slab = slot;
}

void Arena::drop_slab(std::uint32_t slot) noexcept {
  slabs_[slot] = Slab{nullptr, free_slot_, 0};
  free_slot_ = slot;
  --empty_slabs_;
  stats_.reserved_bytes -= kSlabBytes;
}

Arena::Block Arena::allocate(std::uint64_t bytes) {
  if (bytes == 0) fail(ErrorCode::InvalidArgument, "arena allocation of 0 bytes");
  if (bytes > kLargeThreshold) {
    const std::uint64_t mapped = round_up(bytes, kPage);
    std::byte* p = map_bytes(mapped);
    std::lock_guard lock(mutex_);
    try {
      large_.emplace(p, mapped);  // so that the destructor unmaps what is still allocated
    } catch (...) {
      ::munmap(p, mapped);
      throw;
    }
    stats_.reserved_bytes += mapped;
    stats_.allocated_bytes += mapped;
    stats_.requested_bytes += bytes;
    ++stats_.live_blocks;
    return Block{p, bytes, kLargeClass};
  }
  const std::uint16_t index = class_index(bytes);
  std::lock_guard lock(mutex_);
  if (classes_.size() <= index) classes_.resize(index + 1u);
  SizeClass& c = classes_[index];
  c.block_size = class_block_size(index);
  std::byte* p = nullptr;
  std::uint32_t slot = 0;
  if (!c.free.empty()) {
    const FreeBlock f = c.free.back();
    c.free.pop_back();
    slot = f.slab;
    p = slabs_[slot].base + f.offset;
    std::memset(p, 0, bytes);  // fresh slab memory is already zero; reused blocks are not
  } else {
    if (c.bump == c.bump_end) add_slab(c, index);
    slot = c.bump_slab;
    p = c.bump;
    c.bump += c.block_size;
  }
  if (slabs_[slot].live++ == 0) --empty_slabs_;
  stats_.allocated_bytes += c.block_size;
  stats_.requested_bytes += bytes;
  ++stats_.live_blocks;
  return Block{p, bytes, index, slot};
}

void Arena::release(const Block& block) noexcept {
  if (block.data == nullptr) return;
  if (block.size_class == kLargeClass) {
    const std::uint64_t mapped = round_up(block.requested, kPage);
    {
      std::lock_guard lock(mutex_);
      if (large_.erase(block.data) == 0) {
        assert(false && "large block was not allocated by this arena");
        return;  // leaking a foreign mapping beats unmapping someone else's
      }
      stats_.reserved_bytes -= mapped;
      stats_.allocated_bytes -= mapped;
      stats_.requested_bytes -= block.requested;
      --stats_.live_blocks;
    }
    ::munmap(block.data, mapped);
    return;
  }
  const auto addr = reinterpret_cast<std::uintptr_t>(block.data);
  std::lock_guard lock(mutex_);
  const bool ours = block.slab < slabs_.size() && slabs_[block.slab].base != nullptr &&
                    addr - reinterpret_cast<std::uintptr_t>(slabs_[block.slab].base) < kSlabBytes;
  assert(ours && "block was not allocated by this arena");
  if (!ours) return;  // leaking a foreign block beats corrupting a free list
  Slab& s = slabs_[block.slab];
  SizeClass& c = classes_[s.size_class];
  const auto offset = static_cast<std::uint32_t>(addr - reinterpret_cast<std::uintptr_t>(s.base));
  c.free.push_back(FreeBlock{block.slab, offset});
  if (--s.live == 0) ++empty_slabs_;
  stats_.allocated_bytes -= c.block_size;
  stats_.requested_bytes -= block.requested;
  --stats_.live_blocks;
}

ArenaTrim Arena::trim() noexcept {
  ArenaTrim out;
  std::vector<std::byte*> to_unmap;  // unmapped after the mutex is dropped
  {
    std::lock_guard lock(mutex_);
    if (empty_slabs_ == 0) return out;
    bool unmap_now = false;
    try {
      to_unmap.reserve(empty_slabs_);
    } catch (const std::bad_alloc&) {
      unmap_now = true;  // still trim, only holding the mutex through the munmap calls
    }
    for (const Slab& s : slabs_) {
      if (s.base != nullptr && s.live == 0) ++classes_[s.size_class].trimming;
    }
    // Only classes that lose a slab scan their free lists: a wholly free slab's used blocks are
    // all on its class's list, and nowhere else.
    for (SizeClass& c : classes_) {
      if (c.trimming == 0) continue;
      c.trimming = 0;
      std::erase_if(c.free, [&](FreeBlock f) { return slabs_[f.slab].live == 0; });
      if (c.bump_slab != kNoSlab && slabs_[c.bump_slab].live == 0) {
        c.bump = c.bump_end = nullptr;  // the next allocate maps a fresh slab
        c.bump_slab = kNoSlab;
      }
      // A mass deletion leaves a long list behind; its spare capacity is real memory too.
      // (A non-binding request: if the copy cannot be allocated, the capacity simply stays.)
      if (c.free.capacity() > 2 * c.free.size() + 1024) {
        try {
          c.free.shrink_to_fit();
        } catch (const std::bad_alloc&) {
        }
      }
    }
    for (std::uint32_t slot = 0; slot < slabs_.size(); ++slot) {
      std::byte* base = slabs_[slot].base;
      if (base == nullptr || slabs_[slot].live != 0) continue;
      if (unmap_now) ::munmap(base, kSlabBytes);
      else to_unmap.push_back(base);
      drop_slab(slot);
      ++out.slabs_released;
    }
    out.bytes_released = out.slabs_released * kSlabBytes;
  }
  // Nothing can reach these slabs any more (no live, free or bump block in them), so the slow
  // munmap calls need not block allocate/release on other threads.
  for (std::byte* base : to_unmap) ::munmap(base, kSlabBytes);
  return out;
}

ArenaStats Arena::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace mmsb
