#pragma once
#include <pybind11/pybind11.h>

namespace mmsb::py_bind {

/// Registers the one translator from mmsb::Error codes to the classes of mmsb.errors.
void register_error_translator(pybind11::module_& m);

}  // namespace mmsb::py_bind
