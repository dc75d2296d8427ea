#pragma once
// The one kernel every device transfer uses: copy runs between device addresses. A write
// (host -> device) stages its payload and a table of runs in device memory, then copies staging
// -> pages; a read copies pages -> staging; a replica applies a broadcast batch the same way.
// Only the CUDA build's sources include this header. RunCopy.cu is the one source nvcc compiles:
// the host code around it is plain C++, built by the same compiler and warnings as the engine.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "mmsb/cuda/StagingPlan.hpp"

namespace mmsb::cuda {

/// Callers cut runs into pieces of at most this many bytes (StagingPlan does): the kernel sizes
/// its lane groups for the average piece, and one huge run would keep one group busy alone.
inline constexpr std::uint64_t kRunCopyPieceBytes = std::uint64_t{16} << 10;

/// One run: `length` bytes from device address `src` to device address `dst`. The runs of one
/// launch must not overlap at their destinations.
struct DeviceCopyRun {
  std::byte* dst;
  const std::byte* src;
  std::uint64_t length;
};
static_assert(sizeof(DeviceCopyRun) == StagingPlan::kEntryBytes, "StagingPlan sizes copy tables with it");

/// Launches the copy of `count` runs whose table lives in device memory at `table`, on `stream`
/// (asynchronous; the caller synchronizes). `total_bytes` (the sum of lengths) sizes the grid.
/// Returns the launch status (cudaGetLastError after the launch).
cudaError_t launch_run_copy(const DeviceCopyRun* table, std::uint64_t count, std::uint64_t total_bytes,
                            cudaStream_t stream);

}  // namespace mmsb::cuda
