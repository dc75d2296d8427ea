#pragma once
/// DevicePool: size-class allocator for device page memory. cudaMalloc is slow (it may
/// synchronize the device) and its blocks are 2 MiB-granular, so pages come from slabs carved into
/// equal blocks of one class; sizes above kLargeThreshold get an allocation of their own.
///
/// Invariants: every block is at least as large as asked and kAlignment-aligned (a 16-byte vector
/// load in a kernel never straddles it); blocks never overlap or move; a block is zero-filled
/// when handed out (a new page's content is all zeros, as on the host). Freed blocks are kept for
/// reuse until trim() returns the slabs that hold none.
/// The memory itself comes from a SlabSource: cudaMalloc/cudaFree on one device in CUDA builds
/// (cuda::device_slab_source), host memory in the tests, so the bookkeeping is tested anywhere.
/// Thread safety: every member may be called concurrently (one internal mutex): a page's block
/// is released by whichever thread drops its last view.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace mmsb::cuda {

/// Where a DevicePool gets memory. allocate returns nullptr when refused (out of device memory);
/// zero fills bytes with 0 (cudaMemset on a device); release gives a slab back.
struct SlabSource {
  std::string name;  ///< "cuda:0", for error messages
  std::function<void*(std::size_t)> allocate;
  std::function<void(void*, std::size_t)> zero;
  std::function<void(void*)> release;
};

struct DevicePoolStats {
  std::uint64_t reserved_bytes = 0;   ///< obtained from the source (slabs + large blocks)
  std::uint64_t allocated_bytes = 0;  ///< in live blocks, at their class sizes
  std::uint64_t requested_bytes = 0;  ///< asked for by live blocks
  std::uint64_t live_blocks = 0;
  std::uint64_t slabs = 0;
  std::uint64_t large_blocks = 0;
};

class DevicePool {
 public:
  static constexpr std::size_t kAlignment = 256;
  static constexpr std::size_t kSlabBytes = std::size_t{32} << 20;
  static constexpr std::size_t kLargeThreshold = kSlabBytes / 8;
  static constexpr std::uint16_t kLargeClass = 0xFFFF;

  struct Block {
    std::byte* data = nullptr;
    std::uint64_t requested = 0;
    std::uint16_t size_class = 0;
    std::uint32_t slab = 0;  ///< slot in slabs_ of a small block
  };

  explicit DevicePool(SlabSource source);
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;
  /// Releases every slab and large block; blocks must no longer be used.
  ~DevicePool();

  /// A zero-filled block of at least `bytes` (> 0). Throws Error(OutOfMemory) naming the source
  /// and the size when the source refuses or no block can be that large (the pool is unchanged
  /// then), Error(InvalidArgument) for 0 bytes.
  Block allocate(std::uint64_t bytes);
  /// Takes back a block allocate() returned (exactly once).
  void release(const Block& block) noexcept;
  /// Returns slabs holding no live block to the source; returns the bytes given back.
  std::uint64_t trim() noexcept;
  DevicePoolStats stats() const;

  /// Bytes a request of `bytes` occupies (its class size, or itself rounded to kAlignment).
  static std::uint64_t block_size(std::uint64_t bytes) noexcept;

 private:
  struct Slab {
    std::byte* base = nullptr;  // nullptr: slot free for reuse
    std::uint16_t size_class = 0;
    std::uint32_t live = 0;
    std::vector<std::uint32_t> free;  // free block indexes
  };
  static std::uint16_t class_of(std::uint64_t bytes) noexcept;
  static std::uint64_t class_bytes(std::uint16_t c) noexcept { return std::uint64_t{kAlignment} << c; }
  std::uint32_t new_slab_locked(std::uint16_t c);

  SlabSource source_;
  mutable std::mutex mutex_;
  std::vector<Slab> slabs_;
  std::vector<std::vector<std::uint32_t>> partial_;  // per class: slabs with a free block
  DevicePoolStats stats_;
};

}  // namespace mmsb::cuda
