#pragma once
// bench_gpu_apply's scatter floor: the least traffic any kernel can move 64-byte rows with.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

/// Launches, on `stream`, the copy of `rows` 64-byte rows, contiguous in device memory `payload`,
/// to `base` + slots[i] * 64 (device memory, 16-byte aligned; the slots distinct). Returns the
/// launch status.
cudaError_t launch_scatter_floor(std::byte* base, const std::byte* payload, const std::uint32_t* slots,
                                 std::uint64_t rows, cudaStream_t stream);
