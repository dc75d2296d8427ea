#include "MaskStretch.hpp"

#include <algorithm>

#include "mmsb/delta/Diff.hpp"

namespace mmsb::cuda {

std::vector<MaskStretch> mask_stretches(std::span<const std::uint8_t> flags, std::uint64_t n) {
  std::vector<MaskStretch> out;
  const std::uint64_t chunks = std::min<std::uint64_t>(flags.size(), mask_chunks(n));
  for (std::uint64_t k = 0; k < chunks;) {
    if (flags[k] == 0) {
      ++k;
      continue;
    }
    std::uint64_t end = k;
    while (end < chunks && flags[end] != 0) ++end;
    const std::uint64_t base = k * kMaskChunkBytes;
    const std::uint64_t bytes = std::min(n, end * kMaskChunkBytes) - base;
    out.push_back({k * kMaskChunkWords, mask_words(bytes), base, bytes});
    k = end;
  }
  return out;
}

void stretch_runs(std::span<const MaskStretch> stretches, const std::uint64_t* fetched, std::vector<Run>& out) {
  for (const MaskStretch& s : stretches) {
    mask_runs({fetched, s.words}, s.bytes, s.base, out);
    fetched += s.words;
  }
}

}  // namespace mmsb::cuda
