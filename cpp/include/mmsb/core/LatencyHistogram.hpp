#pragma once
/// LatencyHistogram: durations in nanoseconds counted in log-linear buckets (8 per power of two,
/// so a bucket's width is at most 1/8 of its lower bound: quantiles are within 12.5%), the way
/// HdrHistogram and Prometheus-style exporters bucket latencies, in a fixed 4 KiB table.
///
/// Thread safety: one writer at a time (the bus records under its commit lock); any thread may
/// read concurrently (counters are atomics; a reader may see a record half-counted, never a
/// torn value).
#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

namespace mmsb {

class LatencyHistogram {
 public:
  static constexpr unsigned kSubBuckets = 8;
  static constexpr unsigned kBuckets = 64 * kSubBuckets;

  /// One non-empty bucket: durations in [lower_ns, upper_ns] were seen `count` times.
  struct Bucket {
    std::uint64_t lower_ns;
    std::uint64_t upper_ns;
    std::uint64_t count;
  };

  /// Counts one duration. Single writer (see above); never allocates.
  void record(std::uint64_t ns) noexcept {
    bump(counts_[index_of(ns)], 1);
    bump(count_, 1);
    bump(sum_ns_, ns);
    if (ns > max_ns_.load(std::memory_order_relaxed)) max_ns_.store(ns, std::memory_order_relaxed);
  }
  std::uint64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }
  std::uint64_t sum_ns() const noexcept { return sum_ns_.load(std::memory_order_relaxed); }
  std::uint64_t max_ns() const noexcept { return max_ns_.load(std::memory_order_relaxed); }
  /// Upper bound of the bucket holding the q-quantile (0 < q <= 1), capped at the largest value
  /// seen; 0 when empty.
  std::uint64_t quantile_ns(double q) const noexcept;
  /// Non-empty buckets in increasing order.
  std::vector<Bucket> buckets() const;
  /// Zeroes everything (callers serialize it with record(), as for the bus's reset_stats()).
  void reset() noexcept;

  /// Bucket of a duration and the bounds of a bucket (exposed for tests).
  static unsigned index_of(std::uint64_t ns) noexcept;
  static std::uint64_t lower_bound(unsigned index) noexcept;
  static std::uint64_t upper_bound(unsigned index) noexcept;

 private:
  // A plain load + store: the single writer needs no locked read-modify-write.
  static void bump(std::atomic<std::uint64_t>& c, std::uint64_t n) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::array<std::atomic<std::uint64_t>, kBuckets> counts_{};
  std::atomic<std::uint64_t> count_{0}, sum_ns_{0}, max_ns_{0};
};

}  // namespace mmsb
