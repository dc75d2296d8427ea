#pragma once
/// The CUDA leaf, seen from the rest of the engine. Built with the CUDA runtime (and the one
/// kernel source, RunCopy.cu) when the toolkit is found (MMSB_HAVE_CUDA), otherwise from a host-only implementation that reports no devices.
/// Nothing here needs a driver at load time: the static CUDA runtime looks for it on first use.
#include <cstdint>
#include <span>
#include <string>

#include "mmsb/delta/Delta.hpp"

namespace mmsb::cuda {

/// True when this build contains CUDA code.
bool compiled() noexcept;
/// Number of usable devices; 0 without a driver or GPU (never throws).
int device_count() noexcept;
/// compiled() and at least one device.
bool is_available() noexcept;
/// Runtime version as "major.minor", or "" when not compiled.
std::string runtime_version();

/// Applies `delta` to a copy of `page` on device `device` with the run-scatter kernel and returns
/// the device result, so callers can compare it with the host apply. Throws
/// Error(DeviceUnavailable) when no device can run it.
void apply_on_device(int device, const Delta& delta, std::span<std::byte> page);

}  // namespace mmsb::cuda
