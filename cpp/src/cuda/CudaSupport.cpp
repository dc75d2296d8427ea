#include "CudaSupport.hpp"

#include <cuda_runtime.h>

#include "mmsb/core/Error.hpp"

namespace mmsb::cuda {
namespace {

[[noreturn]] void out_of_range(const std::string& where, const char* what, const DeviceRun& r, std::size_t size) {
  fail(ErrorCode::InvalidArgument, where, " ", what, ": run of ", r.length, " bytes at host offset ", r.host_offset,
       " is outside the ", size, "-byte host buffer");
}

}  // namespace

std::uint64_t checked_bytes(std::span<const DeviceRun> runs, std::size_t host_size, const std::string& where,
                            const char* what) {
  std::uint64_t total = 0;
  for (const DeviceRun& r : runs) {
    if (r.host_offset > host_size || r.length > host_size - r.host_offset) out_of_range(where, what, r, host_size);
    total += r.length;
  }
  return total;
}

void require_device(int ordinal, const std::string& where) {
  int count = 0;
  if (const cudaError_t s = cudaGetDeviceCount(&count); s != cudaSuccess) {
    cudaGetLastError();
    fail(ErrorCode::DeviceUnavailable, where, " requested, but no CUDA device is usable: ", cudaGetErrorString(s),
         " (", cudaGetErrorName(s), ")");
  }
  if (ordinal < 0 || ordinal >= count) {
    fail(ErrorCode::DeviceUnavailable, where, " requested, but this machine has ", count, " CUDA device",
         count == 1 ? "" : "s");
  }
}

void free_on(int ordinal, void* p) noexcept {
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess || cudaSetDevice(ordinal) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  cudaFree(p);
  cudaSetDevice(previous);
  cudaGetLastError();
}

}  // namespace mmsb::cuda
