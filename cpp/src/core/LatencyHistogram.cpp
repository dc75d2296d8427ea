#include "mmsb/core/LatencyHistogram.hpp"

#include <bit>

namespace mmsb {

// Values below 8 get a bucket each; above, bucket = 8 * (octave) + the 3 bits after the leading
// one, so every bucket spans 1/8 of its octave.
unsigned LatencyHistogram::index_of(std::uint64_t ns) noexcept {
  if (ns < kSubBuckets) return static_cast<unsigned>(ns);
  const unsigned msb = static_cast<unsigned>(std::bit_width(ns)) - 1;  // >= 3
  const unsigned sub = static_cast<unsigned>((ns >> (msb - 3)) & (kSubBuckets - 1));
  return (msb - 2) * kSubBuckets + sub;
}

std::uint64_t LatencyHistogram::lower_bound(unsigned index) noexcept {
  if (index < kSubBuckets) return index;
  const unsigned msb = index / kSubBuckets + 2;
  const std::uint64_t sub = index % kSubBuckets;
  return (std::uint64_t{1} << msb) + (sub << (msb - 3));
}

std::uint64_t LatencyHistogram::upper_bound(unsigned index) noexcept {
  if (index < kSubBuckets) return index;
  if (index >= index_of(~std::uint64_t{0})) return ~std::uint64_t{0};  // the top octave's last bucket
  return lower_bound(index + 1) - 1;
}

std::uint64_t LatencyHistogram::quantile_ns(double q) const noexcept {
  const std::uint64_t n = count();
  if (n == 0) return 0;
  if (q > 1) q = 1;
  std::uint64_t rank = static_cast<std::uint64_t>(q * static_cast<double>(n) + 0.999999);
  if (rank == 0) rank = 1;
  std::uint64_t seen = 0;
  for (unsigned i = 0; i < kBuckets; ++i) {
    seen += counts_[i].load(std::memory_order_relaxed);
    if (seen >= rank) return std::min(upper_bound(i), max_ns());
  }
  return max_ns();
}

std::vector<LatencyHistogram::Bucket> LatencyHistogram::buckets() const {
  std::vector<Bucket> out;
  for (unsigned i = 0; i < kBuckets; ++i) {
    const std::uint64_t c = counts_[i].load(std::memory_order_relaxed);
    if (c != 0) out.push_back({lower_bound(i), upper_bound(i), c});
  }
  return out;
}

void LatencyHistogram::reset() noexcept {
  for (auto& c : counts_) c.store(0, std::memory_order_relaxed);
  count_.store(0, std::memory_order_relaxed);
  sum_ns_.store(0, std::memory_order_relaxed);
  max_ns_.store(0, std::memory_order_relaxed);
}

}  // namespace mmsb
