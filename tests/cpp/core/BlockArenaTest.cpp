// BlockArena: blocks are aligned, disjoint and reused once freed; large requests bypass the
// chunks; deques on one arena hold exactly what a std::deque holds and may swap; unused_bytes
// counts the reserve.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <algorithm>
#include <deque>
#include <iterator>
#include <random>
#include <set>
#include <vector>

#include "mmsb/core/BlockArena.hpp"

namespace {

using mmsb::ArenaAllocator;
using mmsb::BlockArena;

TEST(BlockArena, BlocksAreAlignedDisjointAndReused) {
  BlockArena arena;
  std::mt19937_64 rng(1);
  struct Held {
    std::byte* p;
    std::size_t bytes;
  };
  std::vector<Held> held;
  for (int i = 0; i < 20'000; ++i) {
    const std::size_t bytes = 1 + rng() % 1024;
    auto* p = static_cast<std::byte*>(arena.allocate(bytes, 8));
    ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % 64, 0u);
    std::memset(p, i & 0xFF, bytes);  // ASan: the whole block is addressable
    held.push_back({p, bytes});
  }
  std::set<std::byte*> starts;
  for (const Held& h : held) starts.insert(h.p);
  EXPECT_EQ(starts.size(), held.size());
  for (std::size_t i = 1; i < held.size(); ++i) {  // no overlap between neighbours in memory
    auto it = starts.find(held[i].p);
    if (std::next(it) != starts.end()) {
      ASSERT_LE(held[i].p + held[i].bytes, *std::next(it));
    }
  }
  const Held first = held.front();
  arena.deallocate(first.p, first.bytes, 8);
  EXPECT_EQ(arena.allocate(first.bytes, 8), first.p) << "a freed block of the same class is reused";
  const std::uint64_t unused = arena.unused_bytes();
  void* big = arena.allocate(1 << 20, 16);  // from operator new, not the chunks
  EXPECT_EQ(arena.unused_bytes(), unused);
  arena.deallocate(big, 1 << 20, 16);
  for (const Held& h : held) arena.deallocate(h.p, h.bytes, 8);
  EXPECT_GE(arena.unused_bytes(), unused + 20'000u);
}

TEST(BlockArena, DequesOnOneArenaMatchStdDequeAndSwap) {
  auto arena = std::make_shared<BlockArena>();
  using Pair = std::pair<std::uint64_t, std::uint64_t>;
  std::deque<Pair, ArenaAllocator<Pair>> a{ArenaAllocator<Pair>(arena)};
  std::deque<Pair> model;
  std::mt19937_64 rng(2);
  for (int i = 0; i < 200'000; ++i) {
    const auto op = rng() % 10;
    if (op < 7 || model.empty()) {
      a.push_back({rng(), rng()});
      model.push_back(a.back());
    } else if (op < 9) {
      a.pop_back();
      model.pop_back();
    } else {
      a.pop_front();
      model.pop_front();
    }
  }
  ASSERT_TRUE(std::equal(a.begin(), a.end(), model.begin(), model.end()));
  decltype(a) b(a.get_allocator());
  b.insert(b.end(), a.begin(), a.begin() + static_cast<std::ptrdiff_t>(a.size() / 2));
  a.swap(b);
  EXPECT_EQ(a.size(), model.size() / 2);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), model.begin()));
  a.clear();
  b.clear();
  arena->release_spare();
}

}  // namespace
