// The scatter floor (ScatterFloor.hpp). Four lanes a row, one 16-byte word each, and a 4-byte
// slot index per row the only metadata read: the run-copy kernel reads a 24-byte table entry
// per run and serves runs of any length and alignment. Its rate against this one's says how much
// of the gap to a device-to-device copy is the kernel's, and how much the scattered rows' own.
#include <algorithm>

#include "KernelLaunch.hpp"
#include "ScatterFloor.hpp"

namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned kLanes = 4;  // 16-byte words per 64-byte row

__global__ void __launch_bounds__(kThreads)
    scatter_rows(uint4* __restrict__ base, const uint4* __restrict__ payload, const std::uint32_t* __restrict__ slots,
                 std::uint64_t rows) {
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * kThreads;
  for (std::uint64_t t = static_cast<std::uint64_t>(blockIdx.x) * kThreads + threadIdx.x; t < rows * kLanes;
       t += stride) {
    base[std::uint64_t{slots[t / kLanes]} * kLanes + t % kLanes] = payload[t];
  }
}

}  // namespace

cudaError_t launch_scatter_floor(std::byte* base, const std::byte* payload, const std::uint32_t* slots,
                                 std::uint64_t rows, cudaStream_t stream) {
  int device = 0;
  int sms = 0;
  int per_sm = 0;
  if (const cudaError_t s = cudaGetDevice(&device); s != cudaSuccess) return s;
  if (const cudaError_t s = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device); s != cudaSuccess) {
    return s;
  }
  if (const cudaError_t s = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, scatter_rows, kThreads, 0);
      s != cudaSuccess) {
    return s;
  }
  // As the run-copy kernel: every block resident from the start, a grid-stride loop over the rows.
  const std::uint64_t needed = (rows * kLanes + kThreads - 1) / kThreads;
  const auto blocks = static_cast<unsigned>(
      std::max<std::uint64_t>(1, std::min<std::uint64_t>(needed, std::uint64_t(sms) * std::max(per_sm, 1))));
  return mmsb::cuda::launch_kernel(scatter_rows, blocks, kThreads, stream, reinterpret_cast<uint4*>(base),
                                   reinterpret_cast<const uint4*>(payload), slots, rows);
}
