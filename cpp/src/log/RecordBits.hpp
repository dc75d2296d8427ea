#pragma once
// Internal: flag bits and limits of record bodies that the encoder (RecordCodec.cpp) and the
// decoder (RecordDecode.cpp) must agree on. Byte-by-byte meaning: docs/format.md.
#include <cstddef>
#include <cstdint>

namespace mmsb::recordbits {

/// Most dimensions a page shape may have.
inline constexpr std::size_t kMaxDims = 32;
// PackedBatch flags: narrow columns and a uniform length cut a 64-byte row's framing from 24 to
// 8 bytes, and the log is what bounds durable batch throughput.
inline constexpr std::uint8_t kIds32 = 1;
inline constexpr std::uint8_t kOffsets32 = 2;
inline constexpr std::uint8_t kUniformLength = 4;
// Wave op flags.
inline constexpr std::uint8_t kWaveDeferred = 1, kWaveRan = 2, kWavePropagate = 4, kWaveLsn = 8, kWaveSkipped = 16;

}  // namespace mmsb::recordbits
