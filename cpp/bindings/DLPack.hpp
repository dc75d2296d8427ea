#pragma once
// DLPack export of pages (host, device and managed memory) and of the device copies of edits on
// the device, written against the DLPack 1.x ABI (structs declared here).
#include <pybind11/pybind11.h>

#include <memory>
#include <vector>

#include "PageHandle.hpp"
#include "mmsb/engine/DeviceStaging.hpp"

namespace mmsb::py_bind {

/// page.__dlpack__(stream=None, max_version=None, dl_device=None, copy=None):
/// a "dltensor_versioned" capsule when max_version >= (1, 0): the page in place with the
/// read-only flag, or a copy (copy=True, or dl_device=(1, 0) for a device page unless
/// copy=False). Else a legacy "dltensor" capsule, which cannot carry the read-only flag: a host
/// copy for the host (BufferError with copy=False), the memory in place for a device. An in-place
/// export pins the page; the deleter (run by the consumer or by the capsule if never consumed)
/// unpins it and needs no GIL. Malformed arguments raise InvalidArgument (a ValueError); an
/// export that cannot be made raises BufferError.
pybind11::capsule dlpack_export(const PageHandle& page, pybind11::handle stream,
                                pybind11::handle max_version, pybind11::handle dl_device,
                                pybind11::handle copy);
/// page.__dlpack_device__() -> (kDLCPU = 1, 0), (kDLCUDA = 2, N) or (kDLCUDAManaged = 13, N).
pybind11::tuple dlpack_device(const PageHandle& page);
/// The DLPack device of memory at `place`.
pybind11::tuple dlpack_device(const DevicePlace& place);
/// A writable, in-place export of an edit's device copy (Page.edit on a device page), shaped like
/// its page; the capsule keeps the copy's memory alive until its consumer lets go. Raises
/// BufferError for another device, copy=True, or an emulated device (its memory is not a GPU's).
pybind11::capsule dlpack_export_staging(std::shared_ptr<const DeviceStaging> staging, DType dtype,
                                        const std::vector<std::uint64_t>& shape, const DevicePlace& place,
                                        pybind11::handle stream, pybind11::handle max_version,
                                        pybind11::handle dl_device, pybind11::handle copy);

}  // namespace mmsb::py_bind
