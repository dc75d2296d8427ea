// Arena invariants: aligned, zero-filled (fresh and reused), class rounding bounds, exact stats,
// no two live blocks ever overlapping, and slabs after a class's first faulted in ahead of use.
// trim() is covered in ArenaTrimTest.cpp.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/core/Prefaulter.hpp"
#include "mmsb/page/Arena.hpp"

namespace mmsb {
namespace {

using test::all_zero;
using test::Rng;
using test::uniform;


// Sizes around every interesting boundary: tiny, class steps, the 4 KiB switch, the large
// threshold, and past it.
std::vector<std::uint64_t> boundary_sizes() {
  std::vector<std::uint64_t> out = {1, 2, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096, 4097,
                                    5119, 5120, 5121, 8191, 8192, 8193, 65537,
                                    Arena::kLargeThreshold - 1, Arena::kLargeThreshold,
                                    Arena::kLargeThreshold + 1, Arena::kLargeThreshold + 4096,
                                    std::uint64_t{3} << 20};
  return out;
}

TEST(ArenaTest, BlocksAre64ByteAlignedAndLargeEnough) {
  Arena arena;
  std::vector<Arena::Block> blocks;
  for (std::uint64_t n : boundary_sizes()) {
    for (int rep = 0; rep < 3; ++rep) {
      Arena::Block b = arena.allocate(n);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data) % Arena::kAlignment, 0u) << n;
      EXPECT_EQ(b.requested, n);
      blocks.push_back(b);
    }
  }
  for (const Arena::Block& b : blocks) arena.release(b);
}

TEST(ArenaTest, ZeroFilledOnFirstUse) {
  Arena arena;
  for (std::uint64_t n : boundary_sizes()) {
    Arena::Block b = arena.allocate(n);
    EXPECT_TRUE(all_zero(b.data, n)) << n;
    arena.release(b);
  }
}

TEST(ArenaTest, ZeroFilledOnReuseAfterGarbage) {
  Arena arena;
  for (std::uint64_t n : boundary_sizes()) {
    // Dirty the whole class block, so a reuse at a smaller size in the same class is covered too.
    const std::uint64_t cls = Arena::class_size_for(n);
    Arena::Block dirty = arena.allocate(n);
    std::memset(dirty.data, 0xAB, n);
    arena.release(dirty);
    Arena::Block again = arena.allocate(n);
    EXPECT_TRUE(all_zero(again.data, n)) << "size " << n;
    arena.release(again);
    if (n > 64 && n <= Arena::kLargeThreshold) {
      Arena::Block full = arena.allocate(cls);
      std::memset(full.data, 0xCD, cls);
      arena.release(full);
      Arena::Block smaller = arena.allocate(n - 1);
      EXPECT_EQ(Arena::class_size_for(n - 1) == cls, smaller.data == full.data)
          << "reuse is LIFO within a class";
      EXPECT_TRUE(all_zero(smaller.data, n - 1)) << "size " << n - 1 << " after " << cls;
      arena.release(smaller);
    }
  }
}

TEST(ArenaTest, ZeroSizeIsRejected) {
  Arena arena;
  test::expect_error(ErrorCode::InvalidArgument, [&] { arena.allocate(0); });
  EXPECT_EQ(arena.stats().live_blocks, 0u);
}

TEST(ArenaTest, RefusedMappingIsOutOfMemoryAndChangesNothing) {
  if (!test::kernel_refuses_huge_mappings()) GTEST_SKIP() << "the kernel overcommits any mapping";
  Arena arena;
  Arena::Block keep = arena.allocate(100);
  const ArenaStats before = arena.stats();
  const std::string msg =
      test::expect_error(ErrorCode::OutOfMemory, [&] { arena.allocate(std::uint64_t{1} << 40); });
  EXPECT_NE(msg.find("1099511627776"), std::string::npos) << msg;
  const ArenaStats after = arena.stats();
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(after.requested_bytes, before.requested_bytes);
  EXPECT_EQ(after.live_blocks, before.live_blocks);
  arena.release(keep);
}

TEST(ArenaTest, ClassSizesAreExactMultiplesOf64UpTo4KiB) {
  for (std::uint64_t n = 1; n <= 4096; ++n) {
    ASSERT_EQ(Arena::class_size_for(n), (n + 63) / 64 * 64) << n;
  }
}

TEST(ArenaTest, ClassSlackBelowQuarterAbove4KiB) {
  std::uint64_t prev = Arena::class_size_for(4096);
  for (std::uint64_t n = 4097; n <= Arena::kLargeThreshold; ++n) {
    const std::uint64_t c = Arena::class_size_for(n);
    ASSERT_GE(c, n);
    ASSERT_LT(4 * (c - n), n) << n;  // (c - n) / n < 25%
    ASSERT_EQ(c % 64, 0u) << "keeps blocks 64-byte aligned inside a slab: " << n;
    ASSERT_GE(c, prev) << "classes are monotone in the request";
    prev = c;
  }
}

TEST(ArenaTest, LargeSizesRoundToOsPages) {
  for (std::uint64_t n : {Arena::kLargeThreshold + 1, Arena::kLargeThreshold + 4096,
                          std::uint64_t{1} << 20, (std::uint64_t{1} << 30) + 1}) {
    const std::uint64_t c = Arena::class_size_for(n);
    EXPECT_GE(c, n);
    EXPECT_EQ(c % 4096, 0u) << n;
    EXPECT_LT(c - n, 4096u) << n;
  }
}

TEST(ArenaTest, LargeBlocksAreUsableAndReturned) {
  Arena arena;
  const std::uint64_t n = (std::uint64_t{1} << 20) + 123;
  Arena::Block b = arena.allocate(n);
  EXPECT_EQ(b.size_class, Arena::kLargeClass);
  EXPECT_TRUE(all_zero(b.data, n));
  b.data[0] = std::byte{1};
  b.data[n - 1] = std::byte{2};  // last byte is writable
  ArenaStats s = arena.stats();
  EXPECT_EQ(s.requested_bytes, n);
  EXPECT_EQ(s.allocated_bytes, Arena::class_size_for(n));
  EXPECT_EQ(s.live_blocks, 1u);
  arena.release(b);
  s = arena.stats();
  // Large blocks go back to the OS, so nothing stays reserved for them.
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.live_blocks, 0u);
}

// Whether any byte of [p, p + n) is mapped: mincore fails with ENOMEM on an unmapped range.
bool mapped(const std::byte* p, std::uint64_t n) {
  std::vector<unsigned char> vec((n + 4095) / 4096);
  return ::mincore(const_cast<std::byte*>(p), n, vec.data()) == 0 || errno != ENOMEM;
}

// A bus's pages are still allocated when it is destroyed: its arena unmaps their memory then,
// the large blocks (each its own mapping) as well as the slabs. They used to stay mapped, so
// every bus (and every bus.at() view) leaked the memory of its pages over 256 KiB.
TEST(ArenaTest, DestroyingTheArenaUnmapsLargeBlocksStillAllocated) {
  const std::uint64_t n = (std::uint64_t{4} << 20) + 100;
  std::byte* large = nullptr;
  std::byte* small = nullptr;
  {
    Arena arena;
    large = arena.allocate(n).data;
    small = arena.allocate(64).data;
    arena.release(arena.allocate(n));  // released ones are unmapped at once, as before
    large[n - 1] = std::byte{1};
    ASSERT_TRUE(mapped(large, n));
    ASSERT_TRUE(mapped(small, 64));
  }
  EXPECT_FALSE(mapped(large, n));
  EXPECT_FALSE(mapped(small, 64));
}

TEST(ArenaTest, StatsAccountForEveryBlockAndReturnToZero) {
  Arena arena;
  Rng rng(11);
  std::vector<Arena::Block> blocks;
  std::uint64_t requested = 0;
  std::uint64_t allocated = 0;
  for (int i = 0; i < 500; ++i) {
    const std::uint64_t n = uniform(rng, 0, 9) == 0 ? uniform(rng, 4097, 600'000) : uniform(rng, 1, 4096);
    blocks.push_back(arena.allocate(n));
    requested += n;
    allocated += Arena::class_size_for(n);
    const ArenaStats s = arena.stats();
    ASSERT_EQ(s.requested_bytes, requested);
    ASSERT_EQ(s.allocated_bytes, allocated);
    ASSERT_EQ(s.live_blocks, blocks.size());
    ASSERT_GE(s.reserved_bytes, s.allocated_bytes);
    ASSERT_EQ(s.slack_bytes(), s.reserved_bytes - s.requested_bytes);
  }
  for (const Arena::Block& b : blocks) arena.release(b);
  const ArenaStats s = arena.stats();
  EXPECT_EQ(s.requested_bytes, 0u);
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.live_blocks, 0u);
}

// Random allocate/release with a shadow of what every live block must contain: each block is
// filled with its own pattern, and any overlap or stray write shows up as a changed byte.
TEST(ArenaTest, RandomBlocksNeverOverlap) {
  Arena arena;
  Rng rng(12);
  struct Live {
    Arena::Block block;
    std::uint8_t pattern;
  };
  std::vector<Live> live;
  auto check = [](const Live& l) {
    const std::byte want{l.pattern};
    return std::all_of(l.block.data, l.block.data + l.block.requested,
                       [&](std::byte b) { return b == want; });
  };
  for (int step = 0; step < 4000; ++step) {
    if (live.empty() || uniform(rng, 0, 99) < 55) {
      const std::uint64_t pick = uniform(rng, 0, 99);
      const std::uint64_t n = pick < 70 ? uniform(rng, 1, 512)
                              : pick < 97 ? uniform(rng, 513, 40'000)
                                          : uniform(rng, 200'000, 400'000);
      Live l{arena.allocate(n), static_cast<std::uint8_t>(uniform(rng, 1, 255))};
      ASSERT_TRUE(std::all_of(l.block.data, l.block.data + n, [](std::byte b) { return b == std::byte{0}; }))
          << "step " << step << ": block of " << n << " not zero-filled";
      std::memset(l.block.data, l.pattern, n);
      live.push_back(l);
    } else {
      const std::size_t i = uniform(rng, 0, live.size() - 1);
      ASSERT_TRUE(check(live[i])) << "step " << step << ": block overwritten by another";
      arena.release(live[i].block);
      live[i] = live.back();
      live.pop_back();
    }
    if (step % 500 == 0) {
      // Class extents (not just requested bytes) of live blocks must be disjoint.
      std::map<const std::byte*, const std::byte*> extents;
      for (const Live& l : live) {
        extents[l.block.data] = l.block.data + Arena::class_size_for(l.block.requested);
      }
      const std::byte* prev_end = nullptr;
      for (const auto& [begin, end] : extents) {
        ASSERT_TRUE(prev_end == nullptr || begin >= prev_end) << "step " << step;
        prev_end = end;
      }
      ASSERT_EQ(extents.size(), live.size()) << "two live blocks share an address";
    }
  }
  for (const Live& l : live) {
    EXPECT_TRUE(check(l));
    arena.release(l.block);
  }
  EXPECT_EQ(arena.stats().live_blocks, 0u);
}

// Pages of the 2 MiB slab holding `p` that are resident.
std::size_t resident_slab_pages(const std::byte* p) {
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  auto* slab = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{Arena::kSlabBytes} - 1));
  std::vector<unsigned char> in_core(Arena::kSlabBytes / page);
  EXPECT_EQ(mincore(slab, Arena::kSlabBytes, in_core.data()), 0);
  std::size_t n = 0;
  for (unsigned char c : in_core) n += c & 1u;
  return n;
}

TEST(ArenaTest, SlabsAfterAClassesFirstAreFaultedInAheadOfTheirWriters) {
#if !defined(MADV_POPULATE_WRITE)
  GTEST_SKIP() << "no MADV_POPULATE_WRITE in these headers";
#else
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  void* probe = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  const bool supported = madvise(probe, page, MADV_POPULATE_WRITE) == 0 || errno != EINVAL;
  munmap(probe, page);
  if (!supported) GTEST_SKIP() << "this kernel lacks MADV_POPULATE_WRITE (Linux 5.14+)";

  // The helper idle first (earlier tests queue slabs too), so that it holds its lock only for
  // this test's requests: a request arriving while it does is dropped.
  ASSERT_TRUE(Prefaulter::settle(20'000));
  Arena arena;
  constexpr std::size_t kBlock = 4096;
  const std::size_t per_slab = Arena::kSlabBytes / kBlock;
  std::vector<Arena::Block> blocks;
  for (std::size_t i = 0; i < 3 * per_slab; ++i) blocks.push_back(arena.allocate(kBlock));
  const std::byte* first = blocks.front().data;
  const std::byte* second = blocks[per_slab].data;
  const std::byte* third = blocks[2 * per_slab].data;
  ASSERT_TRUE(Prefaulter::settle(20'000));
  // Nothing was written: the first slab is the writers' to fault in, the later ones were
  // populated by the helper (a request can be dropped while the helper holds its lock, so at
  // least one of the two).
  EXPECT_EQ(resident_slab_pages(first), 0u);
  EXPECT_EQ(std::max(resident_slab_pages(second), resident_slab_pages(third)), Arena::kSlabBytes / page);
  for (const Arena::Block& b : {blocks[per_slab], blocks[2 * per_slab]}) EXPECT_TRUE(all_zero(b.data, kBlock));
  for (const Arena::Block& b : blocks) arena.release(b);
#endif
}

}  // namespace
}  // namespace mmsb
