#pragma once
/// BlockArena: memory for containers that grow for as long as their owner lives (a bus's
/// provenance index: deques that gain an entry per committed delta). Small blocks (a deque's
/// nodes) are cut from 2 MiB chunks, and the next chunk is allocated and handed to the
/// Prefaulter once the current one is half used, so that growth does not stop on a page fault
/// per 4 KiB of fresh memory; freed blocks go to a free list per size class and are reused.
/// Larger requests (a deque's map) go to operator new. Chunks are given back when the arena dies.
///
/// ArenaAllocator<T> is the standard-allocator face of a shared arena: copies share it and
/// compare equal, so containers built on one arena may swap.
///
/// Thread safety: none; the owner serializes every container on the arena (the bus's commit
/// lock).
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

namespace mmsb {

class BlockArena {
 public:
  BlockArena() = default;
  BlockArena(const BlockArena&) = delete;
  BlockArena& operator=(const BlockArena&) = delete;

  /// `bytes` aligned to `align`; throws std::bad_alloc.
  void* allocate(std::size_t bytes, std::size_t align);
  /// Gives back what allocate(bytes, align) returned.
  void deallocate(void* p, std::size_t bytes, std::size_t align) noexcept;
  /// Bytes held but not in use: the current chunk's tail, the spare chunk, free blocks.
  std::uint64_t unused_bytes() const noexcept;
  /// Frees the spare chunk (gc); the next one is allocated when needed.
  void release_spare() noexcept { spare_.reset(); }

 private:
  static constexpr std::size_t kClass = 64;       // size classes of 64 bytes, 64-byte aligned
  static constexpr std::size_t kMaxBlock = 1024;  // larger: operator new
  static constexpr std::size_t kChunkBytes = std::size_t{2} << 20;
  struct FreeChunk {
    void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{kClass}); }
  };
  using Chunk = std::unique_ptr<std::byte[], FreeChunk>;
  static Chunk new_chunk();
  static bool from_chunks(std::size_t bytes, std::size_t align) noexcept {
    return bytes != 0 && bytes <= kMaxBlock && align <= kClass;
  }

  std::vector<Chunk> chunks_;
  Chunk spare_;  // the next chunk, its pages faulted in ahead of use
  std::byte* next_ = nullptr;
  std::byte* end_ = nullptr;
  std::array<std::vector<void*>, kMaxBlock / kClass> free_;
};

template <class T>
class ArenaAllocator {
 public:
  using value_type = T;
  explicit ArenaAllocator(std::shared_ptr<BlockArena> arena) noexcept : arena_(std::move(arena)) {}
  template <class U>
  ArenaAllocator(const ArenaAllocator<U>& other) noexcept : arena_(other.arena()) {}  // NOLINT: rebinding

  T* allocate(std::size_t n) { return static_cast<T*>(arena_->allocate(n * sizeof(T), alignof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { arena_->deallocate(p, n * sizeof(T), alignof(T)); }
  const std::shared_ptr<BlockArena>& arena() const noexcept { return arena_; }

  template <class U>
  bool operator==(const ArenaAllocator<U>& other) const noexcept {
    return arena_ == other.arena();
  }

 private:
  std::shared_ptr<BlockArena> arena_;
};

}  // namespace mmsb
