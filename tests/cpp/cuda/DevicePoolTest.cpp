// DevicePool bookkeeping over a host SlabSource (the same code serves cudaMalloc'd slabs): blocks
// are never smaller than asked, aligned, zero-filled and disjoint (checked against a model of
// live intervals through random allocate/release/trim); refusals leave the pool unchanged; trim
// returns exactly the slabs with no live block.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "TestUtil.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/DevicePool.hpp"

namespace mmsb::cuda {
namespace {

using test::all_zero;

// Host memory standing in for a device; counts what is outstanding and can refuse.
struct HostSource {
  std::set<void*> out;
  std::uint64_t bytes_out = 0;
  std::uint64_t limit = ~std::uint64_t{0};
  std::map<void*, std::size_t> sizes;

  SlabSource source() {
    return {"host-test",
            [this](std::size_t n) -> void* {
              if (bytes_out + n > limit) return nullptr;
              void* p = std::aligned_alloc(DevicePool::kAlignment, n);
              std::memset(p, 0xAB, n);  // garbage, as fresh device memory may hold
              out.insert(p);
              sizes[p] = n;
              bytes_out += n;
              return p;
            },
            [](void* p, std::size_t n) { std::memset(p, 0, n); },
            [this](void* p) {
              ASSERT_EQ(out.erase(p), 1u) << "released twice or never allocated";
              bytes_out -= sizes[p];
              sizes.erase(p);
              std::free(p);
            }};
  }
};


TEST(DevicePool, BlocksAreLargeEnoughAlignedAndZeroed) {
  HostSource host;
  DevicePool pool(host.source());
  for (std::uint64_t n : std::initializer_list<std::uint64_t>{1, 255, 256, 257, 4096, 100000, DevicePool::kLargeThreshold,
                                                               DevicePool::kLargeThreshold + 1}) {
    DevicePool::Block b = pool.allocate(n);
    EXPECT_GE(DevicePool::block_size(n), n);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data) % DevicePool::kAlignment, 0u) << n;
    EXPECT_TRUE(all_zero(b.data, DevicePool::block_size(n))) << n;
    std::memset(b.data, 0xFF, n);  // dirty it: a reuse must come back zeroed
    pool.release(b);
    DevicePool::Block again = pool.allocate(n);
    EXPECT_TRUE(all_zero(again.data, n)) << n;
    pool.release(again);
  }
  EXPECT_EQ(pool.stats().live_blocks, 0u);
  EXPECT_THROW(pool.allocate(0), Error);
}

TEST(DevicePool, RandomAllocationsNeverOverlapAndStatsAddUp) {
  HostSource host;
  DevicePool pool(host.source());
  std::mt19937_64 rng(7);
  std::map<std::uintptr_t, DevicePool::Block> live;  // by address: overlap = neighbour intersects
  std::uint64_t requested = 0;
  for (int step = 0; step < 20000 / test::kSanitizerScale; ++step) {
    const auto pick = rng() % 100;
    if (pick < 55 || live.empty()) {
      const std::uint64_t n = (rng() % 8 == 0) ? 1 + rng() % (6u << 20) : 1 + rng() % 20000;
      DevicePool::Block b = pool.allocate(n);
      const auto at = reinterpret_cast<std::uintptr_t>(b.data);
      auto next = live.lower_bound(at);
      if (next != live.end()) {
        ASSERT_LE(at + n, next->first) << "overlaps the next block";
      }
      if (next != live.begin()) {
        auto prev = std::prev(next);
        ASSERT_LE(prev->first + prev->second.requested, at) << "overlaps the previous block";
      }
      live.emplace(at, b);
      requested += n;
    } else if (pick < 97) {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      requested -= it->second.requested;
      pool.release(it->second);
      live.erase(it);
    } else {
      pool.trim();
    }
    const DevicePoolStats s = pool.stats();
    ASSERT_EQ(s.live_blocks, live.size());
    ASSERT_EQ(s.requested_bytes, requested);
    ASSERT_EQ(s.reserved_bytes, host.bytes_out);
    ASSERT_LE(s.allocated_bytes, s.reserved_bytes);
  }
  for (auto& [at, b] : live) pool.release(b);
  pool.trim();
  EXPECT_EQ(host.bytes_out, 0u) << "trim left slabs with no live block";
  EXPECT_EQ(pool.stats().slabs, 0u);
}

TEST(DevicePool, TrimKeepsSlabsWithLiveBlocks) {
  HostSource host;
  DevicePool pool(host.source());
  DevicePool::Block a = pool.allocate(1000);
  DevicePool::Block b = pool.allocate(100000);
  pool.release(a);
  EXPECT_EQ(pool.trim(), DevicePool::kSlabBytes);  // a's slab is empty, b's is not
  EXPECT_EQ(pool.stats().slabs, 1u);
  std::memset(b.data, 1, 100000);  // still usable
  pool.release(b);
  EXPECT_EQ(pool.trim(), DevicePool::kSlabBytes);
}

TEST(DevicePool, RefusalLeavesThePoolUnchanged) {
  HostSource host;
  host.limit = DevicePool::kSlabBytes;  // room for one slab, no large block
  DevicePool pool(host.source());
  DevicePool::Block a = pool.allocate(512);
  const DevicePoolStats before = pool.stats();
  // 600 bytes: another class than 512, so it needs a new slab. Sizes that rounding up would wrap
  // past 2^64 are no block at all.
  for (std::uint64_t n : std::initializer_list<std::uint64_t>{DevicePool::kLargeThreshold + 1, 600,
                                                               std::numeric_limits<std::uint64_t>::max(),
                                                               std::numeric_limits<std::uint64_t>::max() - 100}) {
    try {
      pool.allocate(n);
      FAIL() << "expected OutOfMemory for " << n;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::OutOfMemory);
      EXPECT_NE(std::string(e.what()).find("host-test"), std::string::npos) << e.what();
    }
    const DevicePoolStats after = pool.stats();
    EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
    EXPECT_EQ(after.live_blocks, before.live_blocks);
  }
  DevicePool::Block b = pool.allocate(512);  // the class that has a slab still works
  EXPECT_NE(a.data, b.data);
  pool.release(a);
  pool.release(b);
}

}  // namespace
}  // namespace mmsb::cuda
