#include "ErrorTranslator.hpp"

#include <array>
#include <new>
#include <string_view>

#include "mmsb/core/Error.hpp"

namespace mmsb::py_bind {
namespace {
constexpr std::size_t kCodes = kErrorCodeCount;
// Borrowed for the process lifetime from mmsb.errors (kept alive by the module itself, which
// stays in sys.modules while _core is loaded).
std::array<PyObject*, kCodes> g_classes{};
}  // namespace

void register_error_translator(pybind11::module_& m) {
  namespace py = pybind11;
  py::module_ errors = py::module_::import("mmsb.errors");
  for (std::size_t i = 0; i < kCodes; ++i) {
    py::object cls = errors.attr(error_class_name(static_cast<ErrorCode>(i)));
    g_classes[i] = cls.inc_ref().ptr();
  }
  m.attr("_errors") = errors;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      // A message may quote bytes from a hostile file: never let decoding it raise instead.
      const std::string_view what = e.what();
      PyObject* msg = PyUnicode_DecodeUTF8(what.data(), static_cast<Py_ssize_t>(what.size()), "backslashreplace");
      if (msg == nullptr) return;  // out of memory: that error is set
      PyErr_SetObject(g_classes[static_cast<std::size_t>(e.code())], msg);
      Py_DECREF(msg);
    } catch (const std::bad_alloc&) {
      // An allocation the engine did not name: still mmsb's class (a MemoryError too).
      PyErr_SetString(g_classes[static_cast<std::size_t>(ErrorCode::OutOfMemory)],
                      "out of memory: the engine could not allocate what this call needed");
    } catch (PythonAbort& a) {
      a.error.restore();
    }
  });
}

void throw_if_abort(pybind11::error_already_set& e) {
  if (!e.matches(PyExc_Exception)) throw PythonAbort{e};
}

std::string user_error_message(pybind11::error_already_set& e) {
  throw_if_abort(e);
  std::string msg = e.what();
  if (const auto at = msg.find("\n\nAt:"); at != std::string::npos) msg.resize(at);
  return msg;
}

}  // namespace mmsb::py_bind
