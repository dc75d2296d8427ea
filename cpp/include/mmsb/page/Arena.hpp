#pragma once
/// Size-class arena for page data.
///
/// Invariants: every block is 64-byte aligned, zero-filled when handed out, at least as large as
/// requested, and never moves while allocated (views into it stay valid). Small sizes come from
/// 2 MiB slabs (each aligned to 2 MiB and carved into equal blocks of one class); large sizes get
/// their own mapping. Freed small blocks stay mapped for reuse until trim() unmaps the slabs that
/// hold no allocated block.
/// Thread safety: all members may be called concurrently (one internal mutex), because blocks are
/// released from whichever thread drops the last view of a deleted page.
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace mmsb {

struct ArenaStats {
  std::uint64_t reserved_bytes = 0;   ///< bytes mapped from the OS (slabs + large blocks)
  std::uint64_t allocated_bytes = 0;  ///< bytes in live blocks (class sizes)
  std::uint64_t requested_bytes = 0;  ///< bytes asked for by live blocks
  std::uint64_t live_blocks = 0;
  /// Bytes reserved but not requested: class rounding plus free blocks and unused slab tails.
  std::uint64_t slack_bytes() const noexcept { return reserved_bytes - requested_bytes; }
};

/// What trim() gave back to the OS.
struct ArenaTrim {
  std::uint64_t bytes_released = 0;  ///< mapped bytes returned (whole slabs)
  std::uint64_t slabs_released = 0;
};

class Arena {
 public:
  static constexpr std::size_t kAlignment = 64;
  static constexpr std::size_t kSlabBytes = std::size_t{2} << 20;
  /// Sizes above this get a mapping of their own (released to the OS on free).
  static constexpr std::size_t kLargeThreshold = std::size_t{256} << 10;
  static constexpr std::uint16_t kLargeClass = 0xFFFF;

  /// What allocate() hands out and release() takes back, unchanged (PageRecord keeps the fields).
  struct Block {
    std::byte* data = nullptr;
    std::uint64_t requested = 0;
    std::uint16_t size_class = 0;
    /// Slot of the slab holding a small block (unused for large ones), so release() finds the
    /// slab's live count without an address lookup. Sits in padding: Block stays 24 bytes.
    std::uint32_t slab = 0;
  };

  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  /// Unmaps everything; blocks must no longer be referenced.
  ~Arena();

  /// Returns a zero-filled block of at least `bytes` (> 0). Throws Error(OutOfMemory) when the
  /// OS refuses the mapping (std::bad_alloc if bookkeeping cannot grow); the arena is unchanged
  /// then. O(1) apart from mapping a new slab.
  Block allocate(std::uint64_t bytes);
  /// Returns a block obtained from allocate() to its class free list (or to the OS if large).
  /// O(1): the block names its slab. A block whose slab does not hold its address is not from
  /// this arena: it is ignored (an assert in debug builds) rather than corrupt a free list.
  void release(const Block& block) noexcept;

  /// Unmaps every slab none of whose blocks is allocated (its blocks leave the free lists), so
  /// reserved_bytes drops by the same amount. Never touches allocated blocks: their addresses
  /// and contents stay as they are. A class's current bump slab is released too when wholly
  /// free; the class then maps a fresh (zero) slab on its next allocation. allocated, requested
  /// and live_blocks do not change.
  /// Cost: O(1) when no slab is wholly free (a counter says so); otherwise O(slabs + free blocks
  /// of the classes that lose a slab), never O(live blocks). Thread safety: may run alongside
  /// allocate/release on other threads; the munmap calls happen after the mutex is dropped
  /// (under it only if the list of slabs to unmap cannot be allocated). Never throws.
  ArenaTrim trim() noexcept;

  /// Class size a request of `bytes` is rounded up to.
  static std::uint64_t class_size_for(std::uint64_t bytes) noexcept;
  ArenaStats stats() const;

 private:
  static constexpr std::uint32_t kNoSlab = 0xFFFF'FFFFu;

  // A free block as (slab slot, byte offset in the slab): 8 bytes like a pointer, and popping
  // it needs no lookup to find the slab whose live count goes up.
  struct FreeBlock {
    std::uint32_t slab;
    std::uint32_t offset;
  };
  struct SizeClass {
    std::uint64_t block_size = 0;
    std::vector<FreeBlock> free;   // released blocks, reused LIFO (cache-warm)
    std::byte* bump = nullptr;     // next never-used block in the current slab
    std::byte* bump_end = nullptr;
    std::uint32_t bump_slab = kNoSlab;
    std::uint32_t trimming = 0;    // wholly free slabs found by the running trim()
  };
  // One mapped slab, or (base == nullptr) an unused slot whose `live` links the next unused one.
  // Slots never move, so Block::slab and FreeBlock::slab stay valid while the slab is mapped.
  struct Slab {
    std::byte* base = nullptr;
    std::uint32_t live = 0;        // allocated blocks in this slab
    std::uint16_t size_class = 0;
  };

  static std::uint16_t class_index(std::uint64_t bytes) noexcept;
  static std::uint64_t class_block_size(std::uint16_t index) noexcept;
  std::byte* map_bytes(std::uint64_t bytes);
  std::byte* map_slab();
  void add_slab(SizeClass& c, std::uint16_t index);
  void drop_slab(std::uint32_t slot) noexcept;

  mutable std::mutex mutex_;
  std::vector<SizeClass> classes_;
  std::vector<Slab> slabs_;
  std::unordered_map<std::byte*, std::uint64_t> large_;  // live large blocks: address -> bytes mapped
  std::uint32_t free_slot_ = kNoSlab;  // head of the unused-slot chain in slabs_
  std::uint32_t empty_slabs_ = 0;      // mapped slabs with live == 0 (trim() has work iff > 0)
  ArenaStats stats_;
};

}  // namespace mmsb
