// The CUDA leaf of a build without the toolkit: no devices, device calls refused clearly.
#include "Backends.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Cuda.hpp"

namespace mmsb::cuda {
namespace {

[[noreturn]] void refuse(const char* what, int ordinal) {
  fail(ErrorCode::DeviceUnavailable, what, " on CUDA device ", ordinal,
       " requested, but this mmsb was built without CUDA (MMSB_WITH_CUDA=OFF or no toolkit)");
}

}  // namespace

bool compiled() noexcept { return false; }
int device_count() noexcept { return 0; }
bool is_available() noexcept { return false; }
std::string runtime_version() { return ""; }

void apply_on_device(int device, const Delta&, std::span<std::byte>) { refuse("a delta apply", device); }
std::unique_ptr<DeviceBackend> make_cuda_backend(int ordinal) { refuse("device memory", ordinal); }
std::unique_ptr<DeviceBackend> make_unified_backend(int ordinal) { refuse("managed memory", ordinal); }

}  // namespace mmsb::cuda
