// diff_runs: both implementations must give exactly the runs of a byte-at-a-time reference
// (maximal runs of differing bytes, then greedy merging of gaps <= gap), on buffers shaped to hit
// the 8-byte (scalar) and 32-byte (AVX2) block boundaries.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/core/CpuFeatures.hpp"
#include "mmsb/delta/Diff.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::random_bytes;
using test::Rng;
using test::uniform;
// Inside TEST bodies `Run` names testing::Test::Run, hence the alias.
using Runs = std::vector<mmsb::Run>;

Runs reference_diff(const std::byte* old, const std::byte* now, std::uint64_t n,
                                std::uint64_t gap) {
  Runs raw;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (old[i] == now[i]) continue;
    if (!raw.empty() && raw.back().end() == i) {
      ++raw.back().length;
    } else {
      raw.push_back(mmsb::Run{i, 1});
    }
  }
  Runs out;
  for (const Run& r : raw) {
    if (!out.empty() && r.offset - out.back().end() <= gap) {
      out.back().length = r.end() - out.back().offset;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

Runs diff_with(SimdLevel level, const Bytes& old, const Bytes& now,
                           std::uint64_t gap = kCoalesceGap) {
  Runs out;
  diff_runs(level, old.data(), now.data(), old.size(), out, gap);
  return out;
}

// Positions next to the block edges of both implementations.
constexpr std::uint64_t kEdges[] = {0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 33, 39, 40,
                                    47, 48, 63, 64, 65, 95, 96, 127, 128, 255, 256};

// A changed copy of `old`, in one of several change patterns.
Bytes mutate(Rng& rng, const Bytes& old) {
  Bytes now = old;
  const std::uint64_t n = old.size();
  if (n == 0) return now;
  auto flip = [&](std::uint64_t i) {
    if (i < n) now[i] = static_cast<std::byte>(static_cast<std::uint8_t>(old[i]) ^ uniform(rng, 1, 255));
  };
  switch (uniform(rng, 0, 5)) {
    case 0:  // nothing
      break;
    case 1:  // a few scattered bytes
      for (std::uint64_t k = uniform(rng, 1, 4); k > 0; --k) flip(uniform(rng, 0, n - 1));
      break;
    case 2:  // dense: most bytes change
      for (std::uint64_t i = 0; i < n; ++i) {
        if (uniform(rng, 0, 9) < 8) flip(i);
      }
      break;
    case 3:  // bursts starting and ending at block edges
      for (std::uint64_t k = uniform(rng, 1, 4); k > 0; --k) {
        const std::uint64_t a = kEdges[uniform(rng, 0, std::size(kEdges) - 1)];
        const std::uint64_t b = a + kEdges[uniform(rng, 0, std::size(kEdges) - 1)];
        for (std::uint64_t i = a; i <= b; ++i) flip(i);
      }
      break;
    case 4:  // the very first and/or the very last byte
      if (uniform(rng, 0, 1) == 0) flip(0);
      flip(n - 1);
      if (uniform(rng, 0, 1) == 0) flip(n - 1 - std::min<std::uint64_t>(n - 1, uniform(rng, 0, 20)));
      break;
    default:  // runs separated by gaps around kCoalesceGap
      for (std::uint64_t i = uniform(rng, 0, 10); i < n;) {
        const std::uint64_t len = uniform(rng, 1, 40);
        for (std::uint64_t k = 0; k < len; ++k) flip(i + k);
        i += len + kCoalesceGap + uniform(rng, 0, 3) - 2;
      }
      break;
  }
  return now;
}

bool has_avx2() { return simd_level() == SimdLevel::Avx2; }

TEST(DiffTest, ScalarMatchesReference) {
  Rng rng(31);
  for (int c = 0; c < 6000; ++c) {
    const Bytes old = random_bytes(rng, uniform(rng, 0, 300));
    const Bytes now = mutate(rng, old);
    for (std::uint64_t gap : {kCoalesceGap, std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{9}}) {
      ASSERT_EQ(diff_with(SimdLevel::Scalar, old, now, gap),
                reference_diff(old.data(), now.data(), old.size(), gap))
          << "case " << c << " n=" << old.size() << " gap=" << gap;
    }
  }
}

TEST(DiffTest, Avx2MatchesScalarAndReference) {
  if (!has_avx2()) GTEST_SKIP() << "simd_level() is " << simd_level_name(simd_level());
  Rng rng(32);
  for (int c = 0; c < 6000; ++c) {
    const Bytes old = random_bytes(rng, uniform(rng, 0, 300));
    const Bytes now = mutate(rng, old);
    for (std::uint64_t gap : {kCoalesceGap, std::uint64_t{0}, std::uint64_t{33}}) {
      const Runs avx = diff_with(SimdLevel::Avx2, old, now, gap);
      ASSERT_EQ(avx, diff_with(SimdLevel::Scalar, old, now, gap))
          << "case " << c << " n=" << old.size() << " gap=" << gap;
      ASSERT_EQ(avx, reference_diff(old.data(), now.data(), old.size(), gap)) << "case " << c;
    }
  }
}

TEST(DiffTest, UnalignedBuffers) {
  // Pages are 64-byte aligned, but staging buffers handed to diff need not be.
  Rng rng(33);
  std::vector<SimdLevel> levels = {SimdLevel::Scalar};
  if (has_avx2()) levels.push_back(SimdLevel::Avx2);
  for (int c = 0; c < 500; ++c) {
    const std::uint64_t n = uniform(rng, 0, 200);
    const std::uint64_t shift_old = uniform(rng, 0, 31);
    const std::uint64_t shift_now = uniform(rng, 0, 31);
    const Bytes src = random_bytes(rng, n);
    const Bytes changed = mutate(rng, src);
    Bytes a(n + shift_old);
    Bytes b(n + shift_now);
    std::copy(src.begin(), src.end(), a.begin() + static_cast<std::ptrdiff_t>(shift_old));
    std::copy(changed.begin(), changed.end(), b.begin() + static_cast<std::ptrdiff_t>(shift_now));
    const Runs want = reference_diff(src.data(), changed.data(), n, kCoalesceGap);
    for (SimdLevel level : levels) {
      Runs got;
      diff_runs(level, a.data() + shift_old, b.data() + shift_now, n, got);
      ASSERT_EQ(got, want) << "case " << c << " " << simd_level_name(level);
    }
  }
}

TEST(DiffTest, DefaultOverloadUsesTheProcessLevel) {
  Rng rng(34);
  for (int c = 0; c < 200; ++c) {
    const Bytes old = random_bytes(rng, uniform(rng, 0, 300));
    const Bytes now = mutate(rng, old);
    Runs got;
    diff_runs(old.data(), now.data(), old.size(), got);
    ASSERT_EQ(got, diff_with(simd_level(), old, now)) << "case " << c;
  }
}

TEST(DiffTest, IdenticalBuffersGiveNoRuns) {
  Rng rng(35);
  for (std::uint64_t n : {0u, 1u, 7u, 8u, 31u, 32u, 33u, 300u, 4096u}) {
    const Bytes a = random_bytes(rng, n);
    EXPECT_TRUE(diff_with(SimdLevel::Scalar, a, a).empty()) << n;
    if (has_avx2()) {
      EXPECT_TRUE(diff_with(SimdLevel::Avx2, a, a).empty()) << n;
    }
  }
}

TEST(DiffTest, GapsUpToCoalesceGapMergeLargerOnesDoNot) {
  std::vector<SimdLevel> levels = {SimdLevel::Scalar};
  if (has_avx2()) levels.push_back(SimdLevel::Avx2);
  for (SimdLevel level : levels) {
    for (std::uint64_t start : {0u, 5u, 30u, 100u}) {
      for (std::uint64_t g = 1; g <= kCoalesceGap + 3; ++g) {
        const Bytes old(300);
        Bytes now = old;
        now[start] = std::byte{1};
        now[start + 1 + g] = std::byte{1};  // g equal bytes between the two changes
        const Runs got = diff_with(level, old, now);
        if (g <= kCoalesceGap) {
          ASSERT_EQ(got, (Runs{{start, g + 2}})) << "gap " << g << " " << simd_level_name(level);
        } else {
          ASSERT_EQ(got, (Runs{{start, 1}, {start + 1 + g, 1}}))
              << "gap " << g << " " << simd_level_name(level);
        }
      }
    }
  }
}

TEST(DiffTest, DeltaDiffCoalescesLikeDiffRuns) {
  const Bytes old(100);
  Bytes now = old;
  now[10] = std::byte{1};
  now[10 + 1 + kCoalesceGap] = std::byte{2};
  now[60] = std::byte{3};
  now[60 + 2 + kCoalesceGap] = std::byte{4};
  const Delta d = Delta::diff(1, old, now);
  EXPECT_EQ(d.run_list(), (Runs{{10, kCoalesceGap + 2}, {60, 1}, {60 + 2 + kCoalesceGap, 1}}));
  EXPECT_EQ(test::applied(d, old), now);
}

TEST(DiffTest, AppendsWithoutMergingIntoExistingRuns) {
  // The contract is "appends to out": runs already there belong to someone else (another
  // buffer), so the first new run must not be coalesced into them.
  const Bytes old(64);
  Bytes now = old;
  now[8] = now[9] = std::byte{1};
  std::vector<SimdLevel> levels = {SimdLevel::Scalar};
  if (has_avx2()) levels.push_back(SimdLevel::Avx2);
  for (SimdLevel level : levels) {
    Runs out = {mmsb::Run{0, 4}};
    diff_runs(level, old.data(), now.data(), old.size(), out);
    EXPECT_EQ(out, (Runs{{0, 4}, {8, 2}})) << simd_level_name(level);
  }
}

// A device diff: the change mask (what the kernel computes) turned into runs on the host must be
// exactly diff_runs' runs, or a page recomputed on a GPU would log other deltas than on the host.
Runs mask_diff(const Bytes& old, const Bytes& now, std::uint64_t gap) {
  std::vector<std::uint64_t> mask((old.size() + 63) / 64, ~std::uint64_t{0});
  change_mask(old.data(), now.data(), old.size(), mask.data());
  Runs out;
  mask_runs(mask, old.size(), 0, out, gap);
  return out;
}

TEST(DiffTest, MaskRunsMatchReference) {
  Rng rng(41);
  for (int c = 0; c < 6000; ++c) {
    const Bytes old = random_bytes(rng, uniform(rng, 0, 300));
    const Bytes now = mutate(rng, old);
    for (std::uint64_t gap : {kCoalesceGap, std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{70}}) {
      ASSERT_EQ(mask_diff(old, now, gap), reference_diff(old.data(), now.data(), old.size(), gap))
          << "case " << c << " n=" << old.size() << " gap=" << gap;
    }
  }
}

TEST(DiffTest, ChangeMaskClearsBitsPastTheEnd) {
  const Bytes old(70, std::byte{0});
  const Bytes now(70, std::byte{1});
  std::vector<std::uint64_t> mask(2, 0);
  change_mask(old.data(), now.data(), old.size(), mask.data());
  EXPECT_EQ(mask[0], ~std::uint64_t{0});
  EXPECT_EQ(mask[1], std::uint64_t{0x3F});
}

// A GPU reads back only the stretches of chunks whose mask has a bit set and turns each into runs
// alone: with chunks longer than the gap, that is the whole buffer's diff.
TEST(DiffTest, MaskRunsOfChangedStretchesMatchTheWholeDiff) {
  constexpr std::uint64_t kChunk = 256;
  Rng rng(42);
  for (int c = 0; c < 2000; ++c) {
    const std::uint64_t n = uniform(rng, 1, 24 * kChunk);
    const Bytes old = random_bytes(rng, n);
    Bytes now = old;
    const std::uint64_t chunks = (n + kChunk - 1) / kChunk;
    for (std::uint64_t k = 0; k < chunks; ++k) {
      if (uniform(rng, 0, 2) != 0) continue;
      const Bytes part(old.begin() + static_cast<std::ptrdiff_t>(k * kChunk),
                       old.begin() + static_cast<std::ptrdiff_t>(std::min(n, (k + 1) * kChunk)));
      const Bytes changed = mutate(rng, part);
      std::copy(changed.begin(), changed.end(), now.begin() + static_cast<std::ptrdiff_t>(k * kChunk));
    }
    std::vector<std::uint64_t> mask((n + 63) / 64);
    change_mask(old.data(), now.data(), n, mask.data());
    constexpr std::uint64_t kWords = kChunk / 64;
    auto dirty = [&](std::uint64_t k) {
      for (std::uint64_t w = k * kWords; w < std::min<std::uint64_t>(mask.size(), (k + 1) * kWords); ++w) {
        if (mask[w] != 0) return true;
      }
      return false;
    };
    Runs got;
    for (std::uint64_t k = 0; k < chunks;) {
      if (!dirty(k)) {
        ++k;
        continue;
      }
      std::uint64_t end = k;
      while (end < chunks && dirty(end)) ++end;
      const std::uint64_t base = k * kChunk;
      const std::uint64_t len = std::min(n, end * kChunk) - base;
      mask_runs(std::span(mask).subspan(k * kWords), len, base, got);
      k = end;
    }
    ASSERT_EQ(got, reference_diff(old.data(), now.data(), n, kCoalesceGap)) << "case " << c << " n=" << n;
  }
}

}  // namespace
}  // namespace mmsb
