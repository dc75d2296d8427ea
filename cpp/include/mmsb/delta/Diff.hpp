#pragma once
/// Vectorised comparison of two equal-length buffers into runs of changed bytes.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "mmsb/core/CpuFeatures.hpp"
#include "mmsb/delta/Delta.hpp"

namespace mmsb {

/// Runs separated by at most this many equal bytes are merged: storing a run costs 16 bytes of
/// (offset, length), so carrying up to 16 unchanged bytes is never larger.
inline constexpr std::uint64_t kCoalesceGap = 16;

/// Appends to `out` the runs where `now` differs from `old` (n bytes each), coalescing gaps of at
/// most `gap` equal bytes. Uses AVX2 when the CPU has it (see simd_level()); both paths give the
/// same runs. Thread safety: pure function.
void diff_runs(const std::byte* old, const std::byte* now, std::uint64_t n, std::vector<Run>& out,
               std::uint64_t gap = kCoalesceGap);
/// Same, with an explicit implementation (for tests and benchmarks).
void diff_runs(SimdLevel level, const std::byte* old, const std::byte* now, std::uint64_t n,
               std::vector<Run>& out, std::uint64_t gap = kCoalesceGap);

}  // namespace mmsb
