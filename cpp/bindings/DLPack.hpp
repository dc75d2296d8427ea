#pragma once
// DLPack export of CPU pages, written against the DLPack 1.x ABI (structs declared here).
#include <pybind11/pybind11.h>

#include "PageHandle.hpp"

namespace mmsb::py_bind {

/// page.__dlpack__(stream=None, max_version=None, dl_device=None, copy=None):
/// a "dltensor_versioned" capsule with the read-only flag when max_version >= (1, 0), else a
/// legacy "dltensor" capsule. The export pins the page; the deleter (run by the consumer or by
/// the capsule if never consumed) unpins it and needs no GIL.
pybind11::capsule dlpack_export(const PageHandle& page, pybind11::handle stream,
                                pybind11::handle max_version, pybind11::handle dl_device,
                                pybind11::handle copy);
/// page.__dlpack_device__() -> (kDLCPU = 1, 0).
pybind11::tuple dlpack_device(const PageHandle& page);

}  // namespace mmsb::py_bind
