#pragma once
// The one way the CUDA leaf launches its kernels: cudaLaunchKernel, not the triple-chevron syntax
// that only nvcc parses. So the kernels' sources are plain C++ to any compiler, and the tests'
// stand-in runtime (tests/fake_cuda, MMSB_FAKE_CUDA=ON) runs them on the CPU. Only the CUDA
// build's sources include this header.
#include <cuda_runtime.h>

#include <type_traits>

namespace mmsb::cuda {

/// Launches `kernel` over `grid` blocks of `block` threads on `stream` (asynchronous) and returns
/// the launch's status. Each argument is first converted to its parameter's type, because the
/// runtime copies exactly sizeof(parameter) bytes from each argument's address.
template <class... Params>
cudaError_t launch_kernel(void (*kernel)(Params...), unsigned grid, unsigned block, cudaStream_t stream,
                          std::type_identity_t<Params>... args) {
  void* pointers[] = {const_cast<void*>(static_cast<const void*>(&args))..., nullptr};
  return cudaLaunchKernel(kernel, dim3(grid), dim3(block), pointers, 0, stream);
}

}  // namespace mmsb::cuda
