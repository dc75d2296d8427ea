// StagingPlan, the CUDA backend's staging layout, on any machine: random transfers are laid out
// round by round and replayed through a simulated staging buffer and "kernel" (a memcpy per
// table entry) into simulated device memory, which must then equal a host model; every round
// respects the layout rules the kernel relies on (lanes, alignment, capacity, piece size).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/StagingPlan.hpp"

namespace mmsb::cuda {
namespace {

using Bytes = std::vector<std::byte>;
using Piece = StagingPlan::Piece;

std::uint64_t uniform(std::mt19937_64& rng, std::uint64_t lo, std::uint64_t hi) {
  return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
}

TEST(StagingPlan, RandomTransfersReplayToTheHostModel) {
  std::mt19937_64 rng(21);
  Bytes device(1 << 16);
  for (int trial = 0; trial < 400; ++trial) {
    const std::uint64_t piece_bytes = uniform(rng, 1, 300);
    StagingPlan plan(piece_bytes);
    // Disjoint runs (as the backend gets them), in random device order, some empty.
    std::vector<DeviceRun> runs;
    Bytes host;
    Bytes model = device;
    std::uint64_t at = uniform(rng, 0, 64);
    while (at < device.size() && runs.size() < 60) {
      const std::uint64_t most = std::min<std::uint64_t>(2000, device.size() - at);
      const std::uint64_t len = uniform(rng, 0, 8) == 0 ? 0 : uniform(rng, 1, most);
      runs.push_back({device.data() + at, host.size(), len});
      for (std::uint64_t i = 0; i < len; ++i) {
        host.push_back(static_cast<std::byte>(rng()));
        model[at + i] = host.back();
      }
      at += len + uniform(rng, 0, 500);
    }
    std::shuffle(runs.begin(), runs.end(), rng);
    // Sometimes exactly bound() (one round), else anything from one piece's room up.
    const std::uint64_t least = piece_bytes + 2 * StagingPlan::kLane + StagingPlan::kEntryBytes;
    const std::uint64_t capacity = uniform(rng, 0, 3) == 0 ? plan.bound(runs) : uniform(rng, least, 6000);

    Bytes staging(capacity);
    std::uint64_t rounds = 0;
    std::uint64_t covered = 0;
    std::size_t run = 0;
    std::uint64_t into_run = 0;
    plan.plan(runs, capacity, [&](std::span<const Piece> pieces, std::uint64_t table_at) {
      ++rounds;
      ASSERT_FALSE(pieces.empty());
      ASSERT_EQ(table_at % StagingPlan::kLane, 0u);
      ASSERT_LE(table_at + pieces.size() * StagingPlan::kEntryBytes, capacity) << "the table overflows staging";
      std::uint64_t end = 0;
      for (const Piece& p : pieces) {
        ASSERT_GT(p.length, 0u);
        ASSERT_LE(p.length, piece_bytes);
        ASSERT_GE(p.staging, end) << "pieces overlap in staging";
        ASSERT_LT(p.staging - end, StagingPlan::kLane) << "more padding than a lane needs";
        ASSERT_EQ(p.staging % StagingPlan::kLane, reinterpret_cast<std::uintptr_t>(p.device) % StagingPlan::kLane);
        end = p.staging + p.length;
        ASSERT_LE(end, table_at);
        // Pieces follow the runs in order, each run cut at piece_bytes.
        while (runs[run].length == 0) ++run;
        ASSERT_EQ(p.device, runs[run].device + into_run);
        ASSERT_EQ(p.host, runs[run].host_offset + into_run);
        into_run += p.length;
        if (into_run == runs[run].length) {
          ++run;
          into_run = 0;
        }
        covered += p.length;
        std::memcpy(staging.data() + p.staging, host.data() + p.host, p.length);  // the packing
      }
      for (const Piece& p : pieces) std::memcpy(p.device, staging.data() + p.staging, p.length);  // the kernel
    });
    ASSERT_EQ(covered, host.size()) << "trial " << trial;
    ASSERT_EQ(device, model) << "trial " << trial;
    if (capacity == plan.bound(runs) && !host.empty()) {
      EXPECT_EQ(rounds, 1u) << "bound() holds the whole transfer";
    }
  }
}

TEST(StagingPlan, EmptyTransfersHaveNoRound) {
  StagingPlan plan(64);
  Bytes device(100);
  const std::vector<DeviceRun> runs{{device.data(), 0, 0}, {device.data() + 50, 0, 0}};
  int rounds = 0;
  plan.plan(runs, 1024, [&](std::span<const Piece>, std::uint64_t) { ++rounds; });
  plan.plan({}, 1024, [&](std::span<const Piece>, std::uint64_t) { ++rounds; });
  EXPECT_EQ(rounds, 0);
}

TEST(StagingPlan, CapacityBelowOnePieceIsAnInternalError) {
  StagingPlan plan(1000);
  Bytes device(2000);
  const std::vector<DeviceRun> runs{{device.data(), 0, 1000}};
  try {
    plan.plan(runs, 1000, [](std::span<const Piece>, std::uint64_t) { FAIL() << "no round fits"; });
    FAIL() << "expected Internal";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Internal);
  }
}

}  // namespace
}  // namespace mmsb::cuda
