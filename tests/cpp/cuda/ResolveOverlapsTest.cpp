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

// Random runs (up to `max_runs`, each at most 64 bytes) into an array of up to `max_size` bytes,
// resolved, then applied backwards: they must leave what sequential application leaves.
void check_against_sequential(test::Rng& rng, int trials, std::size_t max_size, std::size_t max_runs) {
  for (int trial = 0; trial < trials; ++trial) {
    const std::size_t size = test::uniform(rng, 1, max_size);
    std::vector<std::byte> expect(size), got(size);
    std::vector<mmsb::Run> places;  // where each run goes, as offsets into the arrays
    Bytes host;
    const std::size_t n = test::uniform(rng, 0, max_runs);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t off = test::uniform(rng, 0, size);
      const std::uint64_t len = test::uniform(rng, 0, std::min<std::uint64_t>(size - off, 64));
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
    resolve_overlaps(resolved);
    for (std::size_t i = 0; i < resolved.size(); ++i) {
      ASSERT_GT(resolved[i].length, 0u);
      if (i > 0) {
        ASSERT_LE(resolved[i - 1].device + resolved[i - 1].length, resolved[i].device) << "trial " << trial;
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

// Thousands of runs: the addresses are sorted by the radix pass before the sweep.
TEST(ResolveOverlaps, ManyOverlappingRunsLeaveTheSequentialBytes) {
  test::Rng rng(6);
  check_against_sequential(rng, 20, 40'000, 5000);
}

// Disjoint runs in random order over 64 MiB (three radix passes): sorted, each run unchanged.
TEST(ResolveOverlaps, ManyShuffledDisjointRunsComeOutSortedAndWhole) {
  test::Rng rng(7);
  std::vector<std::byte> memory(std::size_t{64} << 20);
  std::vector<DeviceRun> runs;
  for (std::uint64_t slot = 0; slot < memory.size() / 64; slot += test::uniform(rng, 1, 100)) {
    runs.push_back({memory.data() + slot * 64 + test::uniform(rng, 0, 32), runs.size() * 7, test::uniform(rng, 1, 32)});
  }
  ASSERT_GT(runs.size(), 10'000u);
  std::shuffle(runs.begin(), runs.end(), rng);
  std::vector<DeviceRun> resolved = runs;
  resolve_overlaps(resolved);
  std::sort(runs.begin(), runs.end(), [](const DeviceRun& a, const DeviceRun& b) { return a.device < b.device; });
  ASSERT_EQ(resolved.size(), runs.size());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    ASSERT_EQ(resolved[i].device, runs[i].device) << i;
    ASSERT_EQ(resolved[i].host_offset, runs[i].host_offset) << i;
    ASSERT_EQ(resolved[i].length, runs[i].length) << i;
  }
}

TEST(ResolveOverlaps, SortedDisjointRunsAreKeptAsTheyAre) {
  std::vector<std::byte> memory(100);
  const std::vector<DeviceRun> runs{{memory.data(), 5, 10}, {memory.data() + 10, 0, 5}, {memory.data() + 40, 20, 1}};
  std::vector<DeviceRun> copy = runs;
  resolve_overlaps(copy);
  ASSERT_EQ(copy.size(), runs.size());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(copy[i].device, runs[i].device);
    EXPECT_EQ(copy[i].host_offset, runs[i].host_offset);
    EXPECT_EQ(copy[i].length, runs[i].length);
  }
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
