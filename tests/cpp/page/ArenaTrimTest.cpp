// Arena::trim(): exactly the wholly free slabs go back to the OS (mincore and /proc/self/statm
// confirm it), live blocks keep their addresses and bytes, stats stay exact, and the arena keeps
// handing out zero-filled blocks afterwards, also while other threads allocate and release.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/page/Arena.hpp"

namespace mmsb {
namespace {

using test::all_zero;
using test::Rng;
using test::uniform;


constexpr std::size_t kOsPage = 4096;

std::uintptr_t slab_of(const std::byte* p) {
  return reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{Arena::kSlabBytes} - 1);
}

// OS pages of the slab at `base` that are mapped, asking mincore() (it fails with ENOMEM when
// any page of the range is unmapped, so a partly mapped slab is asked page by page); `resident`
// counts those the kernel holds in memory.
std::size_t mapped_pages(std::uintptr_t base, std::size_t* resident = nullptr) {
  constexpr std::size_t kPages = Arena::kSlabBytes / kOsPage;
  unsigned char in_core[kPages] = {};
  if (::mincore(reinterpret_cast<void*>(base), Arena::kSlabBytes, in_core) == 0) {
    if (resident != nullptr) {
      *resident += std::count_if(in_core, in_core + kPages, [](unsigned char c) { return (c & 1) != 0; });
    }
    return kPages;
  }
  EXPECT_EQ(errno, ENOMEM) << "mincore failed for another reason than 'not mapped'";
  std::size_t mapped = 0;
  for (std::size_t i = 0; i < kPages; ++i) {
    if (::mincore(reinterpret_cast<void*>(base + i * kOsPage), kOsPage, in_core) == 0) ++mapped;
  }
  return mapped;
}

// A live block and the byte it was filled with.
struct Filled {
  Arena::Block block;
  std::uint8_t pattern;
};

Filled allocate_filled(Arena& arena, std::uint64_t n, std::uint8_t pattern) {
  Filled f{arena.allocate(n), pattern};
  EXPECT_TRUE(all_zero(f.block.data, n)) << "block of " << n << " not zero-filled";
  std::memset(f.block.data, pattern, n);
  return f;
}

bool intact(const Filled& f) {
  std::byte want[kOsPage];
  std::memset(want, f.pattern, sizeof want);
  for (std::uint64_t off = 0; off < f.block.requested; off += kOsPage) {
    const std::uint64_t n = std::min<std::uint64_t>(kOsPage, f.block.requested - off);
    if (std::memcmp(f.block.data + off, want, n) != 0) return false;
  }
  return true;
}

std::uint64_t blocks_per_slab(std::uint64_t n) { return Arena::kSlabBytes / Arena::class_size_for(n); }

TEST(ArenaTest, TrimReleasesExactlyTheWhollyFreeSlabs) {
  Arena arena;
  // Four classes: 512, 32 and 9 blocks per slab, and one whose only slab stays mostly unused.
  const std::uint64_t sizes[] = {4096, 65536, 200'000, 100'000};
  const std::uint64_t counts[] = {3 * blocks_per_slab(4096), 3 * blocks_per_slab(65536),
                                  3 * blocks_per_slab(200'000), 3};
  std::vector<Filled> blocks;
  std::vector<std::vector<std::uintptr_t>> slabs(4);  // per size: slab bases in first-use order
  std::map<std::uintptr_t, std::vector<std::size_t>> members;  // slab base -> indexes in blocks
  for (std::size_t k = 0; k < 4; ++k) {
    for (std::uint64_t i = 0; i < counts[k]; ++i) {
      blocks.push_back(allocate_filled(arena, sizes[k], static_cast<std::uint8_t>(1 + blocks.size() % 251)));
      const std::uintptr_t base = slab_of(blocks.back().block.data);
      if (slabs[k].empty() || slabs[k].back() != base) slabs[k].push_back(base);
      members[base].push_back(blocks.size() - 1);
    }
  }
  ASSERT_EQ(slabs[0].size(), 3u);
  ASSERT_EQ(slabs[1].size(), 3u);
  ASSERT_EQ(slabs[2].size(), 3u);
  ASSERT_EQ(slabs[3].size(), 1u);
  ASSERT_EQ(members.size(), 10u) << "a slab serves one class only";
  ASSERT_EQ(arena.stats().reserved_bytes, 10 * Arena::kSlabBytes);

  std::set<std::size_t> freed;
  auto free_some = [&](std::uintptr_t base, std::size_t keep_every) {
    const std::vector<std::size_t>& idx = members[base];
    for (std::size_t j = 0; j < idx.size(); ++j) {
      if (keep_every != 0 && j % keep_every == 0) continue;
      arena.release(blocks[idx[j]].block);
      freed.insert(idx[j]);
    }
  };
  free_some(slabs[0][0], 0);  // wholly free
  free_some(slabs[0][1], 2);  // half free
  free_some(slabs[1][0], 32); // all but one block
  free_some(slabs[2][1], 0);  // wholly free
  free_some(slabs[2][2], 0);  // wholly free, the class's exhausted bump slab
  free_some(slabs[3][0], 0);  // wholly free bump slab with never-used blocks
  const std::vector<std::uintptr_t> gone = {slabs[0][0], slabs[2][1], slabs[2][2], slabs[3][0]};
  for (std::uintptr_t base : gone) ASSERT_EQ(mapped_pages(base), Arena::kSlabBytes / kOsPage);

  const ArenaStats before = arena.stats();
  const ArenaTrim trimmed = arena.trim();
  std::vector<std::size_t> still_mapped;  // measured before anything else may map memory there
  for (std::uintptr_t base : gone) still_mapped.push_back(mapped_pages(base));
  EXPECT_EQ(trimmed.slabs_released, 4u);
  EXPECT_EQ(trimmed.bytes_released, 4 * Arena::kSlabBytes);
  for (std::size_t mapped : still_mapped) EXPECT_EQ(mapped, 0u) << "released slab still mapped";
  const ArenaStats after = arena.stats();
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes - 4 * Arena::kSlabBytes);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(after.requested_bytes, before.requested_bytes);
  EXPECT_EQ(after.live_blocks, before.live_blocks);
  for (const auto& [base, idx] : members) {
    if (std::find(gone.begin(), gone.end(), base) == gone.end()) {
      EXPECT_EQ(mapped_pages(base), Arena::kSlabBytes / kOsPage) << "a kept slab lost pages";
    }
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    if (freed.count(i) == 0) {
      ASSERT_TRUE(intact(blocks[i])) << "block " << i << " changed by trim";
    }
  }
  const ArenaTrim again = arena.trim();
  EXPECT_EQ(again.slabs_released, 0u);
  EXPECT_EQ(again.bytes_released, 0u);
  EXPECT_EQ(arena.stats().reserved_bytes, after.reserved_bytes);

  // Afterwards: reuse of the half-free slab, then fresh slabs for the classes that lost theirs.
  std::vector<Filled> fresh;
  for (std::uint64_t i = 0; i < blocks_per_slab(4096) / 2; ++i) {
    fresh.push_back(allocate_filled(arena, 4096, 0xE1));
    EXPECT_EQ(slab_of(fresh.back().block.data), slabs[0][1]) << "free blocks of a kept slab first";
  }
  EXPECT_EQ(arena.stats().reserved_bytes, after.reserved_bytes);
  fresh.push_back(allocate_filled(arena, 4096, 0xE2));    // needs a new slab
  fresh.push_back(allocate_filled(arena, 200'000, 0xE3));  // its bump slab was released
  fresh.push_back(allocate_filled(arena, 100'000, 0xE4));  // likewise
  EXPECT_EQ(arena.stats().reserved_bytes, after.reserved_bytes + 3 * Arena::kSlabBytes);
  for (const Filled& f : fresh) EXPECT_TRUE(intact(f));
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    if (freed.count(i) == 0) {
      ASSERT_TRUE(intact(blocks[i])) << "block " << i;
    }
  }

  for (std::size_t i = 0; i < blocks.size(); ++i) {
    if (freed.count(i) == 0) arena.release(blocks[i].block);
  }
  for (const Filled& f : fresh) arena.release(f.block);
  EXPECT_EQ(arena.trim().slabs_released, 9u);
  const ArenaStats empty = arena.stats();
  EXPECT_EQ(empty.reserved_bytes, 0u);
  EXPECT_EQ(empty.allocated_bytes, 0u);
  EXPECT_EQ(empty.requested_bytes, 0u);
  EXPECT_EQ(empty.live_blocks, 0u);
}

TEST(ArenaTest, TrimWithNothingWhollyFreeReleasesNothing) {
  Arena arena;
  EXPECT_EQ(arena.trim().slabs_released, 0u);
  std::vector<Arena::Block> blocks;
  for (int i = 0; i < 100; ++i) blocks.push_back(arena.allocate(1000));
  for (int i = 1; i < 100; ++i) arena.release(blocks[i]);  // block 0 keeps the slab in use
  arena.release(arena.allocate(Arena::kLargeThreshold + 1));  // already unmapped on release
  const ArenaStats before = arena.stats();
  const ArenaTrim t = arena.trim();
  EXPECT_EQ(t.slabs_released, 0u);
  EXPECT_EQ(t.bytes_released, 0u);
  const ArenaStats after = arena.stats();
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
  EXPECT_EQ(after.reserved_bytes, Arena::kSlabBytes);
  EXPECT_EQ(after.live_blocks, 1u);
  // The free blocks stay on the list: the next allocation reuses the last one released (LIFO).
  const Arena::Block again = arena.allocate(1000);
  EXPECT_EQ(again.data, blocks[99].data);
  arena.release(again);
  arena.release(blocks[0]);
}

std::uint64_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long long size = 0, resident = 0;
  const int got = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  return got == 2 ? resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

TEST(ArenaTest, TrimmedSlabLeavesTheProcess) {
  Arena arena;
  std::vector<Arena::Block> blocks;
  for (std::uint64_t i = 0; i < blocks_per_slab(8192); ++i) {
    blocks.push_back(arena.allocate(8192));
    std::memset(blocks.back().data, 0x77, 8192);  // make every OS page resident
  }
  const std::uintptr_t base = slab_of(blocks.front().data);
  ASSERT_EQ(slab_of(blocks.back().data), base);
  std::size_t resident = 0;
  ASSERT_EQ(mapped_pages(base, &resident), Arena::kSlabBytes / kOsPage);
  EXPECT_EQ(resident, Arena::kSlabBytes / kOsPage);
  for (const Arena::Block& b : blocks) arena.release(b);
  const std::uint64_t rss_before = resident_bytes();
  const ArenaTrim t = arena.trim();
  const std::uint64_t rss_after = resident_bytes();
  EXPECT_EQ(t.slabs_released, 1u);
  EXPECT_EQ(mapped_pages(base), 0u) << "mincore still finds the released slab";
  if (rss_before != 0) {
    EXPECT_GE(rss_before - std::min(rss_before, rss_after), Arena::kSlabBytes / 2)
        << "resident set did not shrink: " << rss_before << " -> " << rss_after;
  }
}

// Random allocate / release / trim against a model that knows every live block's pattern and
// every slab the arena holds (with its live count): trim must release exactly the model's empty
// slabs, never change a live block, and the stats must match the model at every step.
TEST(ArenaTest, RandomAllocFreeTrimMatchesModel) {
  Arena arena;
  Rng rng(14);
  std::vector<Filled> live;
  std::map<std::uintptr_t, std::uint64_t> slab_live;
  std::uint64_t large_mapped = 0;
  std::uint64_t requested = 0;
  std::uint64_t allocated = 0;
  std::uint64_t trims_that_released = 0;
  auto check_stats = [&](int step) {
    const ArenaStats s = arena.stats();
    ASSERT_EQ(s.live_blocks, live.size()) << "step " << step;
    ASSERT_EQ(s.requested_bytes, requested) << "step " << step;
    ASSERT_EQ(s.allocated_bytes, allocated) << "step " << step;
    ASSERT_EQ(s.reserved_bytes, slab_live.size() * Arena::kSlabBytes + large_mapped) << "step " << step;
    ASSERT_GE(s.reserved_bytes, s.allocated_bytes);
    ASSERT_GE(s.allocated_bytes, s.requested_bytes);
  };
  for (int step = 0; step < 8000; ++step) {
    const bool draining = (step / 400) % 2 == 1;  // alternate phases, so slabs do empty out
    const std::uint64_t dice = uniform(rng, 0, 99);
    if (dice < 2) {
      std::vector<std::uintptr_t> empty;
      for (const auto& [base, n] : slab_live) {
        if (n == 0) empty.push_back(base);
      }
      const ArenaTrim t = arena.trim();
      std::size_t still_mapped = 0;
      for (std::uintptr_t base : empty) still_mapped += mapped_pages(base);
      ASSERT_EQ(t.slabs_released, empty.size()) << "step " << step;
      ASSERT_EQ(t.bytes_released, empty.size() * Arena::kSlabBytes);
      ASSERT_EQ(still_mapped, 0u) << "step " << step;
      for (std::uintptr_t base : empty) slab_live.erase(base);
      for (const auto& [base, n] : slab_live) ASSERT_GT(mapped_pages(base), 0u);
      for (const Filled& f : live) ASSERT_TRUE(intact(f)) << "step " << step << ": trim changed a block";
      trims_that_released += empty.empty() ? 0 : 1;
    } else if (live.empty() || dice < (draining ? 30 : 70)) {
      const std::uint64_t pick = uniform(rng, 0, 99);
      const std::uint64_t n = pick < 40   ? uniform(rng, 1, 512)
                              : pick < 80 ? uniform(rng, 513, 40'000)
                              : pick < 96 ? uniform(rng, 40'001, Arena::kLargeThreshold)
                                          : uniform(rng, Arena::kLargeThreshold + 1, 400'000);
      live.push_back(allocate_filled(arena, n, static_cast<std::uint8_t>(uniform(rng, 1, 255))));
      requested += n;
      allocated += Arena::class_size_for(n);
      if (n > Arena::kLargeThreshold) large_mapped += Arena::class_size_for(n);
      else ++slab_live[slab_of(live.back().block.data)];
    } else {
      const std::size_t i = uniform(rng, 0, live.size() - 1);
      const Arena::Block b = live[i].block;
      ASSERT_TRUE(intact(live[i])) << "step " << step;
      arena.release(b);
      requested -= b.requested;
      allocated -= Arena::class_size_for(b.requested);
      if (b.requested > Arena::kLargeThreshold) large_mapped -= Arena::class_size_for(b.requested);
      else --slab_live.at(slab_of(b.data));
      live[i] = live.back();
      live.pop_back();
    }
    ASSERT_NO_FATAL_FAILURE(check_stats(step));
  }
  EXPECT_GT(trims_that_released, 5u) << "the test should exercise releasing trims";
  for (const Filled& f : live) arena.release(f.block);
  arena.trim();
  EXPECT_EQ(arena.stats().reserved_bytes, 0u);
  EXPECT_EQ(arena.stats().live_blocks, 0u);
}

// trim() unmaps outside the mutex while other threads allocate and release (blocks of deleted
// pages are released from whichever thread drops the last view): no thread may see its block
// change or be handed memory that trim() is about to unmap.
TEST(ArenaTest, TrimRacesAllocateAndRelease) {
  Arena arena;
  std::atomic<bool> stop{false};
  std::atomic<int> broken{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 3; ++w) {
    workers.emplace_back([&, w] {
      Rng rng(100 + w);
      std::vector<Filled> mine;
      while (!stop.load(std::memory_order_relaxed)) {
        if (mine.size() < 200 && uniform(rng, 0, 1) == 0) {
          const std::uint64_t n = uniform(rng, 1, 70'000);
          Filled f{arena.allocate(n), static_cast<std::uint8_t>(uniform(rng, 1, 255))};
          if (!all_zero(f.block.data, n)) ++broken;
          std::memset(f.block.data, f.pattern, n);
          mine.push_back(f);
        } else if (!mine.empty()) {
          // Drop a whole run at once now and then, so slabs empty out while trim runs.
          const std::size_t drop = uniform(rng, 0, 9) == 0 ? mine.size() : 1;
          for (std::size_t k = 0; k < drop; ++k) {
            if (!intact(mine.back())) ++broken;
            arena.release(mine.back().block);
            mine.pop_back();
          }
        }
      }
      for (const Filled& f : mine) {
        if (!intact(f)) ++broken;
        arena.release(f.block);
      }
    });
  }
  std::uint64_t released = 0;
  for (int i = 0; i < 300 || (released == 0 && i < 20'000); ++i) {  // longer only if starved
    released += arena.trim().slabs_released;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  stop = true;
  for (std::thread& t : workers) t.join();
  EXPECT_EQ(broken.load(), 0);
  arena.trim();
  EXPECT_EQ(arena.stats().reserved_bytes, 0u);
  EXPECT_EQ(arena.stats().live_blocks, 0u);
  EXPECT_GT(released, 0u) << "no trim released a slab while the workers ran";
}

}  // namespace
}  // namespace mmsb
