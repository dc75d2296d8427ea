#pragma once
/// Size-class arena for page data.
///
/// Invariants: every block is 64-byte aligned, zero-filled when handed out, at least as large as
/// requested, and never moves while allocated (views into it stay valid). Small sizes come from
/// 2 MiB slabs carved into equal blocks of their class; large sizes get their own mapping.
/// Thread safety: all members may be called concurrently (one internal mutex), because blocks are
/// released from whichever thread drops the last view of a deleted page.
#include <cstddef>
#include <cstdint>
#include <mutex>
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

class Arena {
 public:
  static constexpr std::size_t kAlignment = 64;
  static constexpr std::size_t kSlabBytes = std::size_t{2} << 20;
  /// Sizes above this get a mapping of their own (released to the OS on free).
  static constexpr std::size_t kLargeThreshold = std::size_t{256} << 10;
  static constexpr std::uint16_t kLargeClass = 0xFFFF;

  struct Block {
    std::byte* data = nullptr;
    std::uint64_t requested = 0;
    std::uint16_t size_class = 0;
  };

  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  /// Unmaps everything; blocks must no longer be referenced.
  ~Arena();

  /// Returns a zero-filled block of at least `bytes` (> 0). Throws Error(OutOfMemory) when the
  /// OS refuses the mapping; the arena is unchanged then.
  Block allocate(std::uint64_t bytes);
  /// Returns a block obtained from allocate() to its class free list (or to the OS if large).
  void release(const Block& block) noexcept;

  /// Class size a request of `bytes` is rounded up to.
  static std::uint64_t class_size_for(std::uint64_t bytes) noexcept;
  ArenaStats stats() const;

 private:
  struct SizeClass {
    std::uint64_t block_size = 0;
    std::vector<std::byte*> free;  // released blocks, reused LIFO (cache-warm)
    std::byte* bump = nullptr;     // next never-used block in the current slab
    std::byte* bump_end = nullptr;
  };
  static std::uint16_t class_index(std::uint64_t bytes) noexcept;
  static std::uint64_t class_block_size(std::uint16_t index) noexcept;
  std::byte* map_bytes(std::uint64_t bytes);
  std::byte* map_slab();

  mutable std::mutex mutex_;
  std::vector<SizeClass> classes_;
  std::vector<std::pair<std::byte*, std::size_t>> slabs_;
  ArenaStats stats_;
};

}  // namespace mmsb
