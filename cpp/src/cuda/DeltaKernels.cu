// Device side of delta application: one thread block per run, threads stride over its bytes.
#include <cuda_runtime.h>

#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Cuda.hpp"

namespace mmsb::cuda {
namespace {

__global__ void scatter_runs(unsigned char* page, const std::uint64_t* offsets,
                             const std::uint64_t* lengths, const std::uint64_t* payload_starts,
                             const unsigned char* payload) {
  const std::uint64_t run = blockIdx.x;
  const std::uint64_t off = offsets[run];
  const std::uint64_t len = lengths[run];
  const unsigned char* src = payload + payload_starts[run];
  for (std::uint64_t i = threadIdx.x; i < len; i += blockDim.x) page[off + i] = src[i];
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    fail(ErrorCode::DeviceUnavailable, what, " failed: ", cudaGetErrorString(status));
  }
}

// Owns one device allocation for the duration of apply_on_device.
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(std::size_t bytes) { check(cudaMalloc(&ptr, bytes == 0 ? 1 : bytes), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(ptr); }
  template <class T>
  T* as() const { return static_cast<T*>(ptr); }
};

}  // namespace

bool compiled() noexcept { return true; }

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" status for later callers
    return 0;
  }
  return n;
}

bool is_available() noexcept { return device_count() > 0; }

std::string runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

void apply_on_device(int device, const Delta& delta, std::span<std::byte> page) {
  if (device < 0 || device >= device_count()) {
    fail(ErrorCode::DeviceUnavailable, "CUDA device ", device, " is not available (",
         device_count(), " devices)");
  }
  check(cudaSetDevice(device), "cudaSetDevice");
  const auto& runs = delta.run_list();
  std::vector<std::uint64_t> cols(runs.size() * 3);
  std::uint64_t pos = 0;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    cols[i] = runs[i].offset;
    cols[runs.size() + i] = runs[i].length;
    cols[2 * runs.size() + i] = pos;
    pos += runs[i].length;
  }
  DeviceBuffer d_page(page.size());
  DeviceBuffer d_cols(cols.size() * sizeof(std::uint64_t));
  DeviceBuffer d_payload(delta.payload().size());
  check(cudaMemcpy(d_page.ptr, page.data(), page.size(), cudaMemcpyHostToDevice), "copy page");
  check(cudaMemcpy(d_cols.ptr, cols.data(), cols.size() * sizeof(std::uint64_t), cudaMemcpyHostToDevice),
        "copy runs");
  check(cudaMemcpy(d_payload.ptr, delta.payload().data(), delta.payload().size(), cudaMemcpyHostToDevice),
        "copy payload");
  if (!runs.empty()) {
    const auto* c = d_cols.as<std::uint64_t>();
    scatter_runs<<<static_cast<unsigned>(runs.size()), 128>>>(d_page.as<unsigned char>(), c,
                                                              c + runs.size(), c + 2 * runs.size(),
                                                              d_payload.as<unsigned char>());
    check(cudaGetLastError(), "scatter_runs launch");
  }
  check(cudaMemcpy(page.data(), d_page.ptr, page.size(), cudaMemcpyDeviceToHost), "copy back");
}

}  // namespace mmsb::cuda
