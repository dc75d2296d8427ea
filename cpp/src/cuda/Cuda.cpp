// The CUDA leaf's status functions, and apply_on_device: the device apply path the engine uses
// (DeviceBackend::write: staging copy + run-copy kernel), checked against the host apply.
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb::cuda {

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
    fail(ErrorCode::DeviceUnavailable, "CUDA device ", device, " is not available (", device_count(), " devices)");
  }
  if (delta.extent() > page.size()) {
    fail(ErrorCode::InvalidDelta, "the delta writes up to byte ", delta.extent(), " of a ", page.size(),
         "-byte page");
  }
  DeviceBackend& backend = device_backend("cuda:" + std::to_string(device));
  const DevicePool::Block block = backend.allocate(std::max<std::size_t>(page.size(), 1));
  try {
    const DeviceRun whole{block.data, 0, page.size()};
    backend.write({&whole, 1}, page);
    std::vector<DeviceRun> runs;
    runs.reserve(delta.run_list().size());
    std::uint64_t at = 0;
    for (const Run& r : delta.run_list()) {
      runs.push_back({block.data + r.offset, at, r.length});
      at += r.length;
    }
    resolve_overlaps(runs);
    backend.write(runs, delta.payload());
    backend.read({&whole, 1}, page);
  } catch (...) {
    backend.release(block);
    throw;
  }
  backend.release(block);
}

}  // namespace mmsb::cuda
