#pragma once
// Factories of the real device backends: CudaBackend.cpp in CUDA builds, HostOnly.cpp otherwise
// (where both refuse with DeviceUnavailable). Only DeviceRegistry.cpp calls them.
#include <memory>

#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb::cuda {

/// Backend of device `ordinal` ("cuda:N"). Throws Error(DeviceUnavailable) naming the reason.
std::unique_ptr<DeviceBackend> make_cuda_backend(int ordinal);
/// Managed memory ("unified") on device `ordinal`. Throws Error(DeviceUnavailable).
std::unique_ptr<DeviceBackend> make_unified_backend(int ordinal);

}  // namespace mmsb::cuda
