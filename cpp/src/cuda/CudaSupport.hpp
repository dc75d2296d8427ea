#pragma once
// Helpers shared by the CUDA backends (CudaBackend.cpp, UnifiedBackend.cpp); CUDA builds only.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb::cuda {

/// Checks every run against the host buffer before anything moves (a refused call changes
/// nothing) and returns the payload bytes. Throws Error(InvalidArgument) naming `where` and `what`.
std::uint64_t checked_bytes(std::span<const DeviceRun> runs, std::size_t host_size, const std::string& where,
                            const char* what);
/// Throws Error(DeviceUnavailable) naming `where` unless `ordinal` names a device this process can use.
void require_device(int ordinal, const std::string& where);
/// cudaFree on `ordinal`, from a noexcept path (a page's last view may drop on any thread):
/// errors are dropped, as a failing free has nowhere to go and the memory is lost either way.
void free_on(int ordinal, void* p) noexcept;

}  // namespace mmsb::cuda
