#pragma once
// How a device diff reads back its change mask: the kernel flags each chunk of kMaskChunkBytes
// that holds a changed byte, the host fetches only the mask words of the stretches of flagged
// chunks, and turns each stretch into runs alone. A clean chunk is kMaskChunkBytes equal bytes,
// far more than the coalescing gap, so no run crosses one and the stretches' runs are exactly the
// whole buffer's (mask_runs). Shared by the CUDA backend and the emulation, so the tests run the
// host half of every GPU diff. Only cuda/ sources include this header.
#include <cstdint>
#include <span>
#include <vector>

#include "mmsb/delta/Delta.hpp"

namespace mmsb::cuda {

/// Bytes per flag of a device diff: 256 threads x 32 bytes, one thread block of the mask kernel.
inline constexpr std::uint64_t kMaskChunkBytes = 8192;
/// 64-bit mask words per chunk.
inline constexpr std::uint64_t kMaskChunkWords = kMaskChunkBytes / 64;

/// Consecutive flagged chunks: mask words [first_word, +words) cover bytes [base, +bytes).
struct MaskStretch {
  std::uint64_t first_word = 0;
  std::uint64_t words = 0;
  std::uint64_t base = 0;
  std::uint64_t bytes = 0;
};

/// Mask words of a diff over n bytes ((n + 63) / 64), and chunk flags ((n + chunk - 1) / chunk).
inline std::uint64_t mask_words(std::uint64_t n) noexcept { return (n + 63) / 64; }
inline std::uint64_t mask_chunks(std::uint64_t n) noexcept { return (n + kMaskChunkBytes - 1) / kMaskChunkBytes; }

/// The stretches of nonzero `flags` (one per chunk) of a diff over n bytes, in address order.
std::vector<MaskStretch> mask_stretches(std::span<const std::uint8_t> flags, std::uint64_t n);

/// Appends the runs of `stretches`, whose mask words lie back to back in `fetched` (the words of
/// each stretch, in order), to `out`.
void stretch_runs(std::span<const MaskStretch> stretches, const std::uint64_t* fetched, std::vector<Run>& out);

}  // namespace mmsb::cuda
