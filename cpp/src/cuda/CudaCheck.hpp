#pragma once
// The one way CUDA errors leave the CUDA leaf: as Error(DeviceUnavailable) naming the device, the
// call and CUDA's own description. Only the CUDA build's sources include this header.
#include <cuda_runtime.h>

#include <string_view>

#include "mmsb/core/Error.hpp"

namespace mmsb::cuda {

/// Throws Error(DeviceUnavailable) "<where>: <call> failed: <CUDA's message>" unless `status` is
/// cudaSuccess. The error is first cleared from the thread's last-error slot, so a handled
/// failure (say, out of memory) is not reported again by the next launch's cudaGetLastError.
inline void check(cudaError_t status, std::string_view where, const char* call) {
  if (status == cudaSuccess) return;
  cudaGetLastError();
  fail(ErrorCode::DeviceUnavailable, where, ": ", call, " failed: ", cudaGetErrorString(status), " (",
       cudaGetErrorName(status), ")");
}

/// Makes `ordinal` the calling thread's current device for the guard's lifetime and restores the
/// previous one afterwards, so engine calls never change which device a user's own CUDA code
/// (CuPy, PyTorch) runs on. Throws as check().
class DeviceGuard {
 public:
  DeviceGuard(int ordinal, std::string_view where) {
    check(cudaGetDevice(&previous_), where, "cudaGetDevice");
    if (previous_ != ordinal) {
      check(cudaSetDevice(ordinal), where, "cudaSetDevice");
      switched_ = true;
    }
  }
  ~DeviceGuard() {
    if (switched_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

}  // namespace mmsb::cuda
