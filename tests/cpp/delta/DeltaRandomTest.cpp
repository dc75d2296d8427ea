// Randomized differential tests of the Delta constructors and merge against the byte-array
// model "paint every run in the given order": applied bytes and the set of covered bytes must
// match, and every result must be canonical.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "TestUtil.hpp"
#include "mmsb/delta/Delta.hpp"

namespace mmsb {
namespace {

using test::applied;
using test::Bytes;
using test::covered_by;
using test::is_canonical;
using test::random_bytes;
using test::Rng;
using test::uniform;

constexpr int kCases = 3000;

// A run list for a page of n bytes in one of several shapes, so both the sorted fast path and
// the overlap-painting path of Delta::runs are exercised.
struct RunInput {
  std::vector<std::uint64_t> offsets;
  std::vector<std::uint64_t> lengths;
  Bytes payload;
};
RunInput random_runs(Rng& rng, std::uint64_t n) {
  RunInput in;
  const std::uint64_t shape = uniform(rng, 0, 3);
  const std::uint64_t k = uniform(rng, 0, 24);
  std::uint64_t cursor = 0;
  for (std::uint64_t i = 0; i < k; ++i) {
    std::uint64_t off = 0;
    std::uint64_t len = 0;
    if (shape == 0 && cursor < n) {  // sorted, disjoint, often touching
      off = cursor + (uniform(rng, 0, 1) == 0 ? 0 : uniform(rng, 0, 5));
      off = std::min(off, n);
      len = uniform(rng, 0, std::min<std::uint64_t>(12, n - off));
      cursor = off + len;
    } else if (shape == 1) {  // short overlapping runs clustered in a small window
      off = uniform(rng, 0, std::min<std::uint64_t>(n - 1, 40));
      len = uniform(rng, 0, std::min<std::uint64_t>(10, n - off));
    } else {  // anywhere, any length (including whole-page runs)
      off = uniform(rng, 0, n - 1);
      len = uniform(rng, 0, n - off);
    }
    in.offsets.push_back(off);
    in.lengths.push_back(len);
  }
  std::uint64_t total = 0;
  for (std::uint64_t len : in.lengths) total += len;
  in.payload = random_bytes(rng, total);
  return in;
}

TEST(DeltaRandomTest, RunsEqualPaintInOrder) {
  Rng rng(21);
  for (int c = 0; c < kCases; ++c) {
    const std::uint64_t n = uniform(rng, 1, 300);
    const RunInput in = random_runs(rng, n);
    const Delta d = Delta::runs(c, in.offsets, in.lengths, in.payload);
    ASSERT_TRUE(is_canonical(d)) << "case " << c;
    ASSERT_EQ(d.page_id(), static_cast<PageId>(c));
    ASSERT_LE(d.extent(), n);
    const Bytes base = random_bytes(rng, n);
    const test::Painted want = test::paint_in_order(base, in.offsets, in.lengths, in.payload);
    ASSERT_EQ(applied(d, base), want.bytes) << "case " << c;
    ASSERT_EQ(covered_by(d, n), want.covered) << "case " << c;
  }
}

TEST(DeltaRandomTest, MaskedEqualsPerByteModel) {
  Rng rng(22);
  for (int c = 0; c < kCases; ++c) {
    const std::uint64_t n = uniform(rng, 0, 200);
    const std::uint64_t density = uniform(rng, 0, 100);
    std::vector<std::uint8_t> mask(n);
    std::uint64_t set = 0;
    for (auto& m : mask) {
      // Any nonzero byte marks a position, not just 1.
      m = uniform(rng, 1, 100) <= density ? static_cast<std::uint8_t>(uniform(rng, 1, 255)) : 0;
      set += m != 0;
    }
    const bool dense = uniform(rng, 0, 1) == 0;
    const Bytes data = random_bytes(rng, dense ? n : set);
    const Delta d = Delta::masked(3, mask, data);
    ASSERT_TRUE(is_canonical(d));
    Bytes want = random_bytes(rng, n);
    const Bytes base = want;
    std::vector<bool> covered(n, false);
    std::uint64_t k = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      if (mask[i] == 0) continue;
      want[i] = dense ? data[i] : data[k++];
      covered[i] = true;
    }
    ASSERT_EQ(applied(d, base), want) << "case " << c << (dense ? " dense" : " sparse");
    ASSERT_EQ(covered_by(d, n), covered) << "case " << c;
  }
}

TEST(DeltaRandomTest, MaskedPackedEqualsUnpackedMask) {
  Rng rng(23);
  for (int c = 0; c < kCases; ++c) {
    const std::uint64_t extent = uniform(rng, 0, 130);
    const std::uint64_t nbytes = (extent + 7) / 8 + uniform(rng, 0, 2);
    std::vector<std::uint8_t> bits(nbytes);
    for (auto& b : bits) b = static_cast<std::uint8_t>(rng() & 0xFF);
    std::vector<std::uint8_t> mask(extent);
    for (std::uint64_t i = 0; i < nbytes * 8; ++i) {
      const bool on = (bits[i / 8] >> (i % 8)) & 1u;
      if (i < extent) {
        mask[i] = on;
      } else if (on) {
        bits[i / 8] = static_cast<std::uint8_t>(bits[i / 8] & ~(1u << (i % 8)));  // keep valid
      }
    }
    std::uint64_t set = 0;
    for (auto m : mask) set += m;
    const Bytes data = random_bytes(rng, uniform(rng, 0, 1) == 0 ? extent : set);
    const Delta packed = Delta::masked_packed(4, bits, extent, data);
    const Delta plain = Delta::masked(4, mask, data);
    ASSERT_EQ(packed.run_list(), plain.run_list()) << "case " << c;
    ASSERT_TRUE(std::equal(packed.payload().begin(), packed.payload().end(), plain.payload().begin(),
                           plain.payload().end()));
  }
}

TEST(DeltaRandomTest, MergeEqualsApplyingInOrder) {
  Rng rng(24);
  for (int c = 0; c < kCases; ++c) {
    const std::uint64_t n = uniform(rng, 1, 300);
    const RunInput ia = random_runs(rng, n);
    const RunInput ib = random_runs(rng, n);
    const Delta a = Delta::runs(8, ia.offsets, ia.lengths, ia.payload);
    const Delta b = Delta::runs(8, ib.offsets, ib.lengths, ib.payload);
    const Delta m = merge(a, b);
    ASSERT_TRUE(is_canonical(m)) << "case " << c;
    const Bytes base = random_bytes(rng, n);
    ASSERT_EQ(applied(m, base), applied(b, applied(a, base))) << "case " << c;
    std::vector<bool> want = covered_by(a, n);
    const std::vector<bool> cb = covered_by(b, n);
    for (std::uint64_t i = 0; i < n; ++i) want[i] = want[i] || cb[i];
    ASSERT_EQ(covered_by(m, n), want) << "case " << c;
  }
}

TEST(DeltaRandomTest, MergeIsAssociative) {
  // Compaction may fold a stream in any grouping; the result must not depend on it.
  Rng rng(25);
  for (int c = 0; c < 500; ++c) {
    const std::uint64_t n = uniform(rng, 1, 200);
    std::vector<Delta> d;
    for (int i = 0; i < 3; ++i) {
      const RunInput in = random_runs(rng, n);
      d.push_back(Delta::runs(1, in.offsets, in.lengths, in.payload));
    }
    const Delta left = merge(merge(d[0], d[1]), d[2]);
    const Delta right = merge(d[0], merge(d[1], d[2]));
    ASSERT_EQ(left.run_list(), right.run_list()) << "case " << c;
    ASSERT_TRUE(std::equal(left.payload().begin(), left.payload().end(), right.payload().begin(),
                           right.payload().end()));
  }
}

TEST(DeltaRandomTest, DiffAppliedToOldGivesNew) {
  Rng rng(26);
  for (int c = 0; c < kCases; ++c) {
    const std::uint64_t n = uniform(rng, 0, 400);
    const Bytes old = random_bytes(rng, n);
    Bytes now = old;
    const std::uint64_t changes = uniform(rng, 0, 1) == 0 ? uniform(rng, 0, 4) : uniform(rng, 0, n);
    for (std::uint64_t k = 0; k < changes && n > 0; ++k) {
      now[uniform(rng, 0, n - 1)] = static_cast<std::byte>(rng() & 0xFF);
    }
    const Delta d = Delta::diff(2, old, now);
    ASSERT_TRUE(is_canonical(d)) << "case " << c;
    ASSERT_EQ(applied(d, old), now) << "case " << c;
    ASSERT_EQ(d.empty(), old == now) << "case " << c;
  }
}

}  // namespace
}  // namespace mmsb
