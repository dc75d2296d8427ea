// LatencyHistogram: buckets tile the whole range without gaps, every value lands in the bucket
// whose bounds contain it, and quantiles are within one bucket (12.5%) of the exact ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "mmsb/core/LatencyHistogram.hpp"

namespace mmsb {
namespace {

using H = LatencyHistogram;

TEST(LatencyHistogramTest, BucketsTileTheRangeAndContainTheirValues) {
  const unsigned last = H::index_of(~std::uint64_t{0});
  for (unsigned i = 0; i <= last; ++i) {
    const std::uint64_t lo = H::lower_bound(i);
    if (i < last) {
      EXPECT_EQ(H::upper_bound(i) + 1, H::lower_bound(i + 1)) << "bucket " << i;
    }
    EXPECT_EQ(H::index_of(lo), i);
    EXPECT_EQ(H::index_of(H::upper_bound(i)), i);
    if (lo >= 8) {
      EXPECT_LE(static_cast<double>(H::upper_bound(i) - lo) + 1, lo / 8.0) << "bucket " << i;
    }
  }
  EXPECT_EQ(H::upper_bound(last), ~std::uint64_t{0});
  EXPECT_EQ(H::index_of(~std::uint64_t{0}), H::index_of(std::uint64_t{1} << 63) + 7);
  EXPECT_LT(H::index_of(~std::uint64_t{0}), H::kBuckets);
}

TEST(LatencyHistogramTest, QuantilesAreWithinOneBucketOfTheExactOnes) {
  std::mt19937_64 rng(5);
  std::lognormal_distribution<double> dist(10.0, 2.0);  // ~20 us median, long tail
  std::vector<std::uint64_t> xs;
  H h;
  for (int i = 0; i < 100'000; ++i) {
    const auto x = static_cast<std::uint64_t>(dist(rng));
    xs.push_back(x);
    h.record(x);
  }
  std::sort(xs.begin(), xs.end());
  EXPECT_EQ(h.count(), xs.size());
  EXPECT_EQ(h.max_ns(), xs.back());
  for (double q : {0.5, 0.9, 0.99, 0.999, 1.0}) {
    const std::uint64_t exact = xs[static_cast<std::size_t>(std::ceil(q * xs.size())) - 1];
    const std::uint64_t got = h.quantile_ns(q);
    EXPECT_GE(got, exact) << "q=" << q;  // the upper bound of the bucket holding it
    EXPECT_LE(static_cast<double>(got), exact * 1.125 + 1) << "q=" << q;
  }
  std::uint64_t total = 0;
  for (const auto& b : h.buckets()) {
    EXPECT_LE(b.lower_ns, b.upper_ns);
    total += b.count;
  }
  EXPECT_EQ(total, xs.size());
  h.reset();
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.quantile_ns(0.99), 0u);
  EXPECT_TRUE(h.buckets().empty());
}

}  // namespace
}  // namespace mmsb
