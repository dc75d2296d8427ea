#pragma once
// The kernels of recomputes that run where their pages live: the semiring reduce (the same scalar
// operations as the host's, graph/SemiringScalar.hpp) and the change mask of a diff (see
// MaskStretch.hpp). Only the CUDA build's sources include this header; DeviceCompute.cu is
// compiled by nvcc without FMA contraction, so floating results equal the host's bit for bit.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "mmsb/graph/Semiring.hpp"
#include "mmsb/page/DType.hpp"

namespace mmsb::cuda {

/// Bytes of the argument table of a reduce over `parents` parents: their device addresses, then
/// (when weighted) one weight per parent as the element type.
std::uint64_t reduce_table_bytes(DType dtype, std::size_t parents, bool weighted) noexcept;
/// Writes that table into host memory `table` (8-byte aligned, reduce_table_bytes long). Weights
/// are converted as the host reduce converts them. Preconditions as semiring_reduce.
void fill_reduce_table(SemiringKind s, DType dtype, std::span<const std::byte* const> parents,
                       std::span<const double> weights, std::byte* table);
/// Launches out[i] = ⊕_k (w_k ⊗ parents[k][i]) for i < count on `stream` (asynchronous), the
/// table (fill_reduce_table's bytes) already in device memory. Returns the launch status.
cudaError_t launch_reduce(SemiringKind s, DType dtype, const std::byte* table, std::size_t parents, bool weighted,
                          std::byte* out, std::uint64_t count, cudaStream_t stream);

/// Bytes per CRC of launch_crc32c_blocks: 256 threads x 256 bytes.
inline constexpr std::uint64_t kCrcBlockBytes = 65536;
/// Launches the CRC32C of each whole kCrcBlockBytes block of device memory `p` (`blocks` of them,
/// 16-byte aligned) into device memory `crcs`, one per block, on `stream`. Returns the status.
cudaError_t launch_crc32c_blocks(const std::byte* p, std::uint64_t blocks, std::uint32_t* crcs, cudaStream_t stream);

/// Launches the change mask of device buffers `old` and `now` (n bytes each, 16-byte aligned as pool blocks are) on
/// `stream`: mask_words(n) 64-bit words as change_mask() writes them, and mask_chunks(n) flags,
/// nonzero where a chunk of kMaskChunkBytes holds a changed byte. Returns the launch status.
cudaError_t launch_change_mask(const std::byte* old, const std::byte* now, std::uint64_t n, std::uint64_t* mask,
                               std::uint8_t* flags, cudaStream_t stream);

}  // namespace mmsb::cuda
