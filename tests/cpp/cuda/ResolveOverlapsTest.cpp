// resolve_overlaps: the rewrite every device write goes through, since a kernel copies all runs at
// once and cannot order overlapping ones. Oracle: the runs applied one after another to a byte
// array (later runs win), against the resolved runs applied in any order.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb::cuda {
namespace {

using test::Bytes;

// Applies runs (addresses into a test array) from `host`, in the order given.
void write_runs(const std::vector<DeviceRun>& runs, const Bytes& host) {
  for (const DeviceRun& r : runs) std::copy_n(host.begin() + static_cast<std::ptrdiff_t>(r.host_offset), r.length, r.device);
}

// `got` holds exactly the runs of `want`, in the same order.
void expect_same_runs(const std::vector<DeviceRun>& got, const std::vector<DeviceRun>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].device, want[i].device) << i;
    ASSERT_EQ(got[i].host_offset, want[i].host_offset) << i;
    ASSERT_EQ(got[i].length, want[i].length) << i;
  }
}

// The runs runs_into(m) gives for an array m, resolved and applied backwards into `memory`, leave
// what applying them in order to an array of the same size leaves.
template <class RunsInto>
void expect_sequential_bytes(std::vector<std::byte>& memory, RunsInto runs_into, const Bytes& host) {
  std::vector<std::byte> expect(memory.size());
  write_runs(runs_into(expect), host);
  std::vector<DeviceRun> resolved = runs_into(memory);
  resolve_overlaps(resolved);
  std::reverse(resolved.begin(), resolved.end());
  write_runs(resolved, host);
  EXPECT_EQ(memory, expect);
}

// Random runs (up to `max_runs`, each at most `max_length` bytes) into an array of up to
// `max_size` bytes, resolved, then applied backwards: they must leave what sequential application
// leaves.
void check_against_sequential(test::Rng& rng, int trials, std::size_t max_size, std::size_t max_runs,
                              std::uint64_t max_length = 64) {
  for (int trial = 0; trial < trials; ++trial) {
    const std::size_t size = test::uniform(rng, 1, max_size);
    std::vector<std::byte> expect(size), got(size);
    std::vector<mmsb::Run> places;  // where each run goes, as offsets into the arrays
    Bytes host;
    const std::size_t n = test::uniform(rng, 0, max_runs);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t off = test::uniform(rng, 0, size);
      const std::uint64_t len = test::uniform(rng, 0, std::min<std::uint64_t>(size - off, max_length));
      const Bytes bytes = test::random_bytes(rng, len);
      places.push_back({off, len});
      host.insert(host.end(), bytes.begin(), bytes.end());
    }
    auto runs_into = [&](std::vector<std::byte>& memory) {
      std::vector<DeviceRun> rs;
      std::uint64_t pos = 0;
      for (const mmsb::Run& p : places) {
        rs.push_back({memory.data() + p.offset, pos, p.length});
        pos += p.length;
      }
      return rs;
    };
    write_runs(runs_into(expect), host);
    std::vector<DeviceRun> resolved = runs_into(got);
    const std::uint64_t bytes = resolve_overlaps(resolved);
    std::uint64_t held = 0;
    for (const DeviceRun& r : resolved) held += r.length;
    ASSERT_EQ(bytes, held) << "trial " << trial;
    // Disjoint, in whatever order they come: sorted by address, each ends before the next starts.
    std::vector<DeviceRun> by_address = resolved;
    std::sort(by_address.begin(), by_address.end(), [](const DeviceRun& a, const DeviceRun& b) { return a.device < b.device; });
    for (std::size_t i = 0; i < by_address.size(); ++i) {
      ASSERT_GT(by_address[i].length, 0u);
      if (i > 0) {
        ASSERT_LE(by_address[i - 1].device + by_address[i - 1].length, by_address[i].device) << "trial " << trial;
      }
    }
    // Disjoint: applied backwards they must still give the sequential result.
    std::reverse(resolved.begin(), resolved.end());
    write_runs(resolved, host);
    ASSERT_EQ(got, expect) << "trial " << trial;
  }
}

TEST(ResolveOverlaps, LeavesTheBytesSequentialApplicationLeaves) {
  test::Rng rng(5);
  check_against_sequential(rng, 2000, 300, 12);
}

// Runs of up to 20 KB, sparse in a 4 MB array: most trials overlap nowhere and pass the granule
// bitmaps, their runs each setting bits across several words and some across two regions.
TEST(ResolveOverlaps, LongRunsLeaveTheSequentialBytes) {
  test::Rng rng(9);
  check_against_sequential(rng, 150, 4 << 20, 8, 20'000);
}

// Thousands of runs: the addresses are sorted by the radix pass before the sweep.
TEST(ResolveOverlaps, ManyOverlappingRunsLeaveTheSequentialBytes) {
  test::Rng rng(6);
  check_against_sequential(rng, 20, 40'000, 5000);
}

// Shuffled disjoint runs over 64 MiB, sharing no 64-byte line: told apart by the granule bitmap
// and kept in their order, each unchanged.
TEST(ResolveOverlaps, ManyShuffledRunsOnDistinctLinesAreKeptInTheirOrder) {
  test::Rng rng(7);
  std::vector<std::byte> memory((std::size_t{64} << 20) + 64);
  std::byte* const lines = memory.data() + (64 - reinterpret_cast<std::uintptr_t>(memory.data()) % 64) % 64;
  std::vector<DeviceRun> runs;
  std::uint64_t bytes = 0;
  for (std::uint64_t slot = 0; slot < (std::uint64_t{64} << 20) / 64; slot += test::uniform(rng, 1, 100)) {
    runs.push_back({lines + slot * 64 + test::uniform(rng, 0, 32), runs.size() * 7, test::uniform(rng, 1, 32)});
    bytes += runs.back().length;
  }
  ASSERT_GT(runs.size(), 10'000u);
  std::shuffle(runs.begin(), runs.end(), rng);
  std::vector<DeviceRun> resolved = runs;
  ASSERT_EQ(resolve_overlaps(resolved), bytes);
  expect_same_runs(resolved, runs);
}

// Disjoint runs that share lines (8-byte rows in every other slot of each line, shuffled): the
// granule bitmap cannot tell them apart, so the radix sort does (three passes over 64 MiB);
// sorted, each run unchanged.
TEST(ResolveOverlaps, ManyShuffledDisjointRunsSharingLinesComeOutSortedAndWhole) {
  test::Rng rng(8);
  std::vector<std::byte> memory(std::size_t{64} << 20);
  std::vector<DeviceRun> runs;
  for (std::uint64_t at = 0; at + 8 <= memory.size(); at += 16 * test::uniform(rng, 1, 50)) {
    runs.push_back({memory.data() + at, runs.size() * 8, 8});
  }
  ASSERT_GT(runs.size(), 10'000u);
  std::shuffle(runs.begin(), runs.end(), rng);
  std::vector<DeviceRun> resolved = runs;
  ASSERT_EQ(resolve_overlaps(resolved), runs.size() * 8);
  std::sort(runs.begin(), runs.end(), [](const DeviceRun& a, const DeviceRun& b) { return a.device < b.device; });
  expect_same_runs(resolved, runs);
}

// 64-byte rows to random 64-byte slots of 64 MiB, many slots written more than once (as a batch
// rewriting a slot): the last write of each slot is kept, one run a slot, sorted.
TEST(ResolveOverlaps, RowsRepeatingSlotsKeepEachSlotsLastWrite) {
  test::Rng rng(11);
  constexpr std::uint64_t kSlots = (std::uint64_t{64} << 20) / 64;
  std::vector<std::byte> memory(kSlots * 64), expect(memory.size());
  std::vector<std::uint64_t> slots;
  for (int i = 0; i < 200'000; ++i) slots.push_back(test::uniform(rng, 0, 60'000));  // ~1 in 3 repeats
  const Bytes host = test::random_bytes(rng, slots.size() * 64);
  auto runs_into = [&](std::vector<std::byte>& m) {
    std::vector<DeviceRun> rs;
    for (std::size_t i = 0; i < slots.size(); ++i) rs.push_back({m.data() + slots[i] * 64, i * 64, 64});
    return rs;
  };
  write_runs(runs_into(expect), host);
  std::vector<DeviceRun> resolved = runs_into(memory);
  const std::uint64_t bytes = resolve_overlaps(resolved);
  std::vector<std::uint64_t> distinct = slots;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  ASSERT_LT(distinct.size(), slots.size());
  ASSERT_EQ(resolved.size(), distinct.size());
  ASSERT_EQ(bytes, distinct.size() * 64);
  for (std::size_t i = 1; i < resolved.size(); ++i) ASSERT_LT(resolved[i - 1].device, resolved[i].device);
  std::reverse(resolved.begin(), resolved.end());
  write_runs(resolved, host);
  ASSERT_EQ(memory, expect);
}

// Repeats of a slot mixed with a run overlapping it differently: the repeat pass gives up and the
// sweep resolves them all (later run wins).
TEST(ResolveOverlaps, RepeatsMixedWithOtherOverlapsLeaveTheSequentialBytes) {
  std::vector<std::byte> memory(256);
  Bytes host(64 * 4);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<std::byte>(i + 1);
  expect_sequential_bytes(memory, [](std::vector<std::byte>& m) {
    return std::vector<DeviceRun>{{m.data() + 64, 0, 64}, {m.data() + 64, 64, 64}, {m.data() + 96, 128, 64},
                                  {m.data(), 192, 64}};
  }, host);
}

TEST(ResolveOverlaps, SortedDisjointRunsAreKeptAsTheyAre) {
  std::vector<std::byte> memory(100);
  const std::vector<DeviceRun> runs{{memory.data(), 5, 10}, {memory.data() + 10, 0, 5}, {memory.data() + 40, 20, 1}};
  std::vector<DeviceRun> copy = runs;
  resolve_overlaps(copy);
  expect_same_runs(copy, runs);
}

// Two runs of 5 MiB, the later one first: they touch 40 regions of 256 KiB, more than a
// bitmap of about 8 bytes a run allows, so they are sorted instead.
TEST(ResolveOverlaps, RunsTouchingMoreRegionsThanTheBudgetAreSorted) {
  std::vector<std::byte> memory(std::size_t{12} << 20);
  std::vector<DeviceRun> runs{{memory.data() + (std::size_t{6} << 20), 0, std::size_t{5} << 20},
                              {memory.data(), std::size_t{5} << 20, std::size_t{5} << 20}};
  ASSERT_EQ(resolve_overlaps(runs), std::uint64_t{10} << 20);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].device, memory.data());
  EXPECT_EQ(runs[0].host_offset, std::uint64_t{5} << 20);
  EXPECT_EQ(runs[1].device, memory.data() + (std::size_t{6} << 20));
}

// A run crossing a 256 KiB region boundary, and a later one overlapping it only past the
// boundary: the overlap is found in the second region's bitmap, and the later run wins.
TEST(ResolveOverlaps, AnOverlapPastARegionBoundaryIsFound) {
  std::vector<std::byte> memory(std::size_t{1} << 20);
  // A region boundary of `memory`; the model array takes the runs at the same offsets (where its
  // own regions fall does not matter to plain copies).
  const std::uint64_t boundary = (std::uint64_t{1} << 18) - reinterpret_cast<std::uintptr_t>(memory.data()) % (1 << 18);
  Bytes host(192 + 32);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<std::byte>(i + 1);
  expect_sequential_bytes(memory, [&](std::vector<std::byte>& m) {
    return std::vector<DeviceRun>{{m.data() + boundary - 64, 0, 192}, {m.data() + boundary + 64, 192, 32}};
  }, host);
}

// Rows on distinct lines of two separate allocations (as device slabs may lie far apart),
// shuffled together: the regions' bitmaps tell them disjoint, and they keep their order.
TEST(ResolveOverlaps, RowsOfSeparateAllocationsOnDistinctLinesKeepTheirOrder) {
  test::Rng rng(10);
  std::vector<std::byte> a(std::size_t{8} << 20), b(std::size_t{8} << 20);
  std::vector<DeviceRun> runs;
  for (std::vector<std::byte>* memory : {&a, &b}) {
    for (std::uint64_t at = 0; at + 128 <= memory->size(); at += 128 * test::uniform(rng, 1, 20)) {
      runs.push_back({memory->data() + at, runs.size() * 64, 64});
    }
  }
  std::shuffle(runs.begin(), runs.end(), rng);
  std::vector<DeviceRun> resolved = runs;
  ASSERT_EQ(resolve_overlaps(resolved), runs.size() * 64);
  expect_same_runs(resolved, runs);
}

TEST(ResolveOverlaps, AFullyCoveredRunDisappears) {
  std::vector<std::byte> memory(64);
  std::vector<DeviceRun> runs{{memory.data() + 8, 0, 8}, {memory.data(), 100, 32}};
  resolve_overlaps(runs);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].device, memory.data());
  EXPECT_EQ(runs[0].host_offset, 100u);
  EXPECT_EQ(runs[0].length, 32u);
}

}  // namespace
}  // namespace mmsb::cuda
