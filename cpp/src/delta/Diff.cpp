#include "mmsb/delta/Diff.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace mmsb {
namespace {

// Collects raw runs of differing bytes and merges those separated by <= gap equal bytes.
class RunSink {
 public:
  RunSink(std::vector<Run>& out, std::uint64_t gap) : out_(out), first_(out.size()), gap_(gap) {}
  std::uint64_t gap() const noexcept { return gap_; }
  void emit(std::uint64_t start, std::uint64_t end) {
    // Only runs found by this diff may absorb the new one; earlier contents of `out` are the
    // caller's.
    if (out_.size() > first_ && start - out_.back().end() <= gap_) {
      out_.back().length = end - out_.back().offset;
    } else {
      out_.push_back(Run{start, end - start});
    }
  }

 private:
  std::vector<Run>& out_;
  std::size_t first_;
  std::uint64_t gap_;
};

std::uint64_t load64(const std::byte* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
// True when no byte of x is zero, i.e. all 8 compared bytes differ.
bool no_zero_byte(std::uint64_t x) {
  return ((x - 0x0101010101010101ull) & ~x & 0x8080808080808080ull) == 0;
}

// Byte-at-a-time state machine shared by both paths for the ragged tail.
void diff_tail(const std::byte* old, const std::byte* now, std::uint64_t i, std::uint64_t n,
               bool& in_run, std::uint64_t& start, RunSink& sink) {
  for (; i < n; ++i) {
    const bool differs = old[i] != now[i];
    if (differs && !in_run) {
      in_run = true;
      start = i;
    } else if (!differs && in_run) {
      in_run = false;
      sink.emit(start, i);
    }
  }
}

void diff_scalar(const std::byte* old, const std::byte* now, std::uint64_t n, RunSink& sink) {
  std::uint64_t i = 0;
  bool in_run = false;
  std::uint64_t start = 0;
  while (i + 8 <= n) {
    const std::uint64_t x = load64(old + i) ^ load64(now + i);
    if (!in_run && x == 0) {
      i += 8;
      continue;
    }
    if (in_run && no_zero_byte(x)) {
      i += 8;
      continue;
    }
    diff_tail(old, now, i, i + 8, in_run, start, sink);
    i += 8;
  }
  diff_tail(old, now, i, n, in_run, start, sink);
  if (in_run) sink.emit(start, n);
}

// The run boundaries inside one chunk: bit k of `differs` is set when byte base + k differs,
// `full` has one bit per byte of the chunk. Each boundary costs one countr_zero. A gap the sink
// would coalesce (at most gap() equal bytes, then a differing byte in this chunk) is stepped over
// without ending the run: numbers that change by a little differ in a few bytes each, so a page
// of them has a gap per element.
inline void walk_chunk(std::uint64_t differs, std::uint64_t full, std::uint64_t base, bool& in_run,
                       std::uint64_t& start, RunSink& sink) {
  std::uint64_t ahead = full;  // bits at or after the scan position
  for (;;) {
    // Next boundary: the first differing byte outside a run, the first equal byte inside one.
    const std::uint64_t next = (in_run ? ~differs : differs) & ahead;
    if (next == 0) return;
    const auto pos = static_cast<unsigned>(std::countr_zero(next));
    if (in_run) {
      const std::uint64_t again = differs & full & (~std::uint64_t{0} << pos);
      if (again != 0 && static_cast<unsigned>(std::countr_zero(again)) - pos <= sink.gap()) {
        ahead = full & (~std::uint64_t{0} << std::countr_zero(again));
        continue;
      }
      sink.emit(start, base + pos);
    } else {
      start = base + pos;
    }
    in_run = !in_run;
    ahead = full & (~std::uint64_t{0} << pos);  // bit pos is of the other kind now
  }
}

#if defined(__x86_64__)
// Bit k set: byte k of the 32 differs.
__attribute__((target("avx2"))) inline std::uint64_t differing32(const std::byte* old, const std::byte* now) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(old));
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(now));
  return ~static_cast<std::uint64_t>(static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(a, b)))) &
         0xFFFFFFFFull;
}

// 64 bytes per step: one mask of both halves, so a chunk without a boundary (all equal outside
// a run, all different inside one) costs a compare and a branch.
__attribute__((target("avx2"))) void diff_avx2(const std::byte* old, const std::byte* now,
                                               std::uint64_t n, RunSink& sink) {
  constexpr std::uint64_t kAll = ~std::uint64_t{0};
  std::uint64_t i = 0;
  bool in_run = false;
  std::uint64_t start = 0;
  for (; i + 64 <= n; i += 64) {
    const std::uint64_t d = differing32(old + i, now + i) | differing32(old + i + 32, now + i + 32) << 32;
    if (d != (in_run ? kAll : 0)) walk_chunk(d, kAll, i, in_run, start, sink);
  }
  if (i + 32 <= n) {
    const std::uint64_t d = differing32(old + i, now + i);
    if (d != (in_run ? 0xFFFFFFFFull : 0)) walk_chunk(d, 0xFFFFFFFFull, i, in_run, start, sink);
    i += 32;
  }
  diff_tail(old, now, i, n, in_run, start, sink);
  if (in_run) sink.emit(start, n);
}
#endif

// Both entry points inline it: a wave diffs every recomputed page, so one call layer less.
[[gnu::always_inline]] inline void diff_at(SimdLevel level, const std::byte* old, const std::byte* now,
                                           std::uint64_t n, std::vector<Run>& out, std::uint64_t gap) {
  RunSink sink(out, gap);
#if defined(__x86_64__)
  if (level == SimdLevel::Avx2) {
    diff_avx2(old, now, n, sink);
    return;
  }
#endif
  (void)level;
  diff_scalar(old, now, n, sink);
}

}  // namespace

void diff_runs(SimdLevel level, const std::byte* old, const std::byte* now, std::uint64_t n,
               std::vector<Run>& out, std::uint64_t gap) {
  diff_at(level, old, now, n, out, gap);
}

void diff_runs(const std::byte* old, const std::byte* now, std::uint64_t n, std::vector<Run>& out,
               std::uint64_t gap) {
  diff_at(simd_level(), old, now, n, out, gap);
}

void change_mask(const std::byte* old, const std::byte* now, std::uint64_t n, std::uint64_t* mask) noexcept {
  for (std::uint64_t w = 0; w < (n + 63) / 64; ++w) {
    const std::uint64_t base = w * 64;
    const std::uint64_t end = std::min(n, base + 64);
    std::uint64_t bits = 0;
    for (std::uint64_t i = base; i < end; ++i) bits |= std::uint64_t{old[i] != now[i]} << (i - base);
    mask[w] = bits;
  }
}

void mask_runs(std::span<const std::uint64_t> mask, std::uint64_t n, std::uint64_t base, std::vector<Run>& out,
               std::uint64_t gap) {
  RunSink sink(out, gap);
  bool in_run = false;
  std::uint64_t start = 0;
  const std::uint64_t words = std::min<std::uint64_t>(mask.size(), (n + 63) / 64);
  for (std::uint64_t w = 0; w < words; ++w) {
    const std::uint64_t left = n - w * 64;
    const std::uint64_t full = left >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << left) - 1;
    const std::uint64_t bits = mask[w] & full;
    if (bits != (in_run ? full : 0)) walk_chunk(bits, full, base + w * 64, in_run, start, sink);
  }
  if (in_run) sink.emit(start, base + n);
}

}  // namespace mmsb
