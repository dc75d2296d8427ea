#pragma once
#include <pybind11/pybind11.h>

#include <string>

namespace mmsb::py_bind {

/// A Python exception raised in user code the engine calls (a recompute, the bus's clock) that
/// asks the program to stop rather than reports a failure: KeyboardInterrupt (Ctrl-C),
/// SystemExit, any BaseException that is not an Exception. Wrapped as PropagationError it would
/// be swallowed by `except Exception`. So it crosses the engine as this type, derived from no
/// std::exception: the engine wraps user code's std::exceptions into mmsb errors but rolls back
/// and rethrows any other type unchanged, and the translator restores the Python exception.
struct PythonAbort {
  pybind11::error_already_set error;
};

/// Registers the one translator from mmsb::Error codes to the classes of mmsb.errors (and of
/// PythonAbort back to its Python exception).
void register_error_translator(pybind11::module_& m);

/// For the handler of a Python exception `e` raised by user code the engine called: throws
/// PythonAbort if `e` asks to stop, else returns. Needs the GIL.
void throw_if_abort(pybind11::error_already_set& e);

/// throw_if_abort(e), then `e`'s message without pybind11's traceback lines, so that no Python
/// object outlives the call.
std::string user_error_message(pybind11::error_already_set& e);

}  // namespace mmsb::py_bind
