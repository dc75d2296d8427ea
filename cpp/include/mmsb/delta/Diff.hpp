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

/// The change mask of two buffers of n bytes, as a device computes it: bit k of mask[w] is set
/// when byte 64w + k differs; bits at or past n are clear. `mask` holds (n + 63) / 64 words.
/// Scalar (the device emulation and tests use it; a GPU computes the mask itself).
void change_mask(const std::byte* old, const std::byte* now, std::uint64_t n, std::uint64_t* mask) noexcept;

/// Appends the runs of a change mask over n bytes, their offsets shifted by `base`: exactly the
/// runs diff_runs gives for the buffers the mask was taken from, given that a stretch [base,
/// base + n) cut out of a larger buffer is bordered by more than `gap` equal bytes (or the
/// buffer's ends). Mask bits at or past n are ignored. A GPU's diff reads back only its mask (and
/// only the stretches that hold changes), then the changed bytes; this turns the mask into runs.
void mask_runs(std::span<const std::uint64_t> mask, std::uint64_t n, std::uint64_t base, std::vector<Run>& out,
               std::uint64_t gap = kCoalesceGap);

}  // namespace mmsb
