// The CUDA leaf of a build without the toolkit: no devices, device calls refused clearly.
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Cuda.hpp"

namespace mmsb::cuda {

bool compiled() noexcept { return false; }
int device_count() noexcept { return 0; }
bool is_available() noexcept { return false; }
std::string runtime_version() { return ""; }

void apply_on_device(int device, const Delta&, std::span<std::byte>) {
  fail(ErrorCode::DeviceUnavailable, "CUDA device ", device,
       " requested, but this mmsb was built without CUDA (MMSB_WITH_CUDA=OFF or no toolkit)");
}

}  // namespace mmsb::cuda
