// mmsb._core: the engine seen from Python.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "Bindings.hpp"
#include "ErrorTranslator.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/engine/BuildInfo.hpp"

namespace py = pybind11;
using namespace mmsb;

PYBIND11_MODULE(_core, m) {
  m.doc() = "mmsb engine (C++). Use the mmsb package, not this module directly.";
  py_bind::register_error_translator(m);
  py_bind::bind_page(m);
  py_bind::bind_bus(m);
  py_bind::bind_delta(m);
  py_bind::bind_inspect(m);
  py_bind::bind_graph(m);
  py_bind::bind_tick(m);
  py_bind::bind_cuda(m);

  m.def("build_info", [] {
    const BuildInfo b = build_info();
    py::dict d;
    d["version"] = b.version;
    d["compiler"] = b.compiler;
    d["build_type"] = b.build_type;
    d["sanitize"] = b.sanitize;
    d["cuda"] = b.cuda;
    d["cuda_runtime"] = b.cuda_runtime;
    d["cuda_devices"] = b.cuda_devices;
    d["nccl"] = b.nccl;
    d["tbb"] = b.tbb;
    d["parallel_backend"] = b.parallel_backend;
    d["simd"] = b.simd;
    d["hardware_threads"] = b.hardware_threads;
    d["page_metadata_bytes"] = b.page_record_bytes;
    return d;
  }, "What this build contains: version, compiler, CUDA/NCCL/TBB on or off, SIMD level, ...");
  m.def("cuda_compiled", &cuda::compiled);
  m.def("cuda_device_count", &cuda::device_count);
  m.def("cuda_emulate_devices", &cuda::emulate_devices, py::arg("count"));
  m.def("cuda_emulated_devices", &cuda::emulated_devices);
  m.def("cuda_fail_emulated_write", &cuda::fail_emulated_write, py::arg("nth"));
  m.attr("__version__") = build_info().version;
}
