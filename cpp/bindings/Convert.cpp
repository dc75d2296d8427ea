#include "Convert.hpp"

#include <array>
#include <limits>
#include <string>
#include <string_view>

#include "ErrorTranslator.hpp"
#include "mmsb/core/Error.hpp"

namespace mmsb::py_bind {

namespace {
// Whether a struct format holds Python objects ('O'), outside the ":name:" of struct fields: the
// buffer's bytes are then PyObject pointers, which would be stored as data.
bool holds_objects(const char* format) {
  bool in_name = false;
  for (const char* c = format; c != nullptr && *c != '\0'; ++c) {
    if (*c == ':') in_name = !in_name;
    else if (*c == 'O' && !in_name) return true;
  }
  return false;
}
}  // namespace

ByteBuffer::ByteBuffer(py::handle obj, const char* what, bool want_format) {
  // The format is always asked for, to refuse object buffers; `want_format` keeps it for dtype().
  if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
    view_ = Py_buffer{};
    if (PyObject_CheckBuffer(obj.ptr()) == 0) {
      PyErr_Clear();
      fail(ErrorCode::InvalidArgument, what, " must support the buffer protocol (bytes, bytearray, "
           "memoryview or a NumPy array); got ", Py_TYPE(obj.ptr())->tp_name);
    }
    // Asked again for any layout: only a strided buffer is a matter of contiguity. Others fail
    // for a reason of their own (a dtype NumPy cannot export, a released memoryview), told as is.
    py::error_already_set why;  // takes the error
    Py_buffer any{};
    if (PyObject_GetBuffer(obj.ptr(), &any, PyBUF_STRIDES | PyBUF_FORMAT) == 0) {
      PyBuffer_Release(&any);
      fail(ErrorCode::InvalidArgument, what,
           " must be C-contiguous; pass numpy.ascontiguousarray(x) (mmsb never copies silently)");
    }
    PyErr_Clear();
    fail(ErrorCode::InvalidArgument, what, " cannot be read as a buffer: ", user_error_message(why));
  }
  if (holds_objects(view_.format)) {
    const std::string format = view_.format;
    PyBuffer_Release(&view_);
    view_ = Py_buffer{};
    fail(ErrorCode::InvalidArgument, what, " holds Python objects (format '", format,
         "'), whose bytes are memory addresses; pass numbers or bytes (for example np.asarray(x, dtype=...))");
  }
  typed_ = want_format;
}

DType ByteBuffer::dtype() const {
  std::string_view f = typed_ && view_.format != nullptr ? view_.format : "B";
  if (!f.empty() && (f.front() == '@' || f.front() == '=' || f.front() == '<')) f.remove_prefix(1);
  if (!f.empty() && (f.front() == '>' || f.front() == '!')) {
    fail(ErrorCode::InvalidArgument, "big-endian data (format '", view_.format,
         "') is not supported; convert with x.astype(x.dtype.newbyteorder('='))");
  }
  char kind = 0;
  if (f == "?") kind = 'b';
  else if (f == "b" || f == "h" || f == "i" || f == "l" || f == "q") kind = 'i';
  else if (f == "B" || f == "H" || f == "I" || f == "L" || f == "Q") kind = 'u';
  else if (f == "e" || f == "f" || f == "d") kind = 'f';
  else if (f == "Zf" || f == "Zd") kind = 'c';
  else fail(ErrorCode::InvalidArgument, "unsupported element format '", view_.format, "'");
  return dtype_from_kind(kind, static_cast<std::size_t>(view_.itemsize));
}

std::vector<std::uint64_t> ByteBuffer::shape() const {
  std::vector<std::uint64_t> s;
  if (view_.shape == nullptr) {
    s.push_back(static_cast<std::uint64_t>(view_.len / (view_.itemsize > 0 ? view_.itemsize : 1)));
    return s;
  }
  for (int i = 0; i < view_.ndim; ++i) s.push_back(static_cast<std::uint64_t>(view_.shape[i]));
  return s;
}

namespace {
// An integer argument as a Python int (NumPy integers are not PyLong but implement __index__);
// bool and non-integers raise InvalidArgument naming `what`.
py::object as_index(py::handle value, const char* what) {
  if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr())) {
    fail(ErrorCode::InvalidArgument, what, " must be an integer; got ", Py_TYPE(value.ptr())->tp_name);
  }
  py::object as_int = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
  if (!as_int) throw py::error_already_set();
  return as_int;
}
}  // namespace

int to_int(py::handle value, const char* what) {
  const py::object as_int = as_index(value, what);
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(as_int.ptr(), &overflow);
  if (overflow == 0 && v == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0 || v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
    fail(ErrorCode::InvalidArgument, what, " ", std::string(py::str(value)), " is out of range");
  }
  return static_cast<int>(v);
}

std::uint64_t to_u64(py::handle value, const char* what) {
  const py::object as_int = as_index(value, what);
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(as_int.ptr(), &overflow);
  if (overflow == 0 && v >= 0) return static_cast<std::uint64_t>(v);
  if (overflow == 0 && v == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow < 0 || (overflow == 0 && v < 0)) {
    fail(ErrorCode::InvalidArgument, what, " must not be negative; got ",
         std::string(py::str(value)));
  }
  const unsigned long long u = PyLong_AsUnsignedLongLong(as_int.ptr());
  if (u == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    fail(ErrorCode::InvalidArgument, what, " ", std::string(py::str(value)),
         " does not fit in 64 bits");
  }
  return u;
}

std::optional<std::string> to_text_if_encodable(py::handle value, const char* what) {
  if (!PyUnicode_Check(value.ptr())) {
    fail(ErrorCode::InvalidArgument, what, " must be a str; got ", Py_TYPE(value.ptr())->tp_name);
  }
  Py_ssize_t n = 0;
  const char* s = PyUnicode_AsUTF8AndSize(value.ptr(), &n);
  if (s == nullptr) {
    if (!PyErr_ExceptionMatches(PyExc_UnicodeError)) throw py::error_already_set();
    PyErr_Clear();
    return std::nullopt;
  }
  return std::string(s, static_cast<std::size_t>(n));
}

std::string to_text(py::handle value, const char* what) {
  if (std::optional<std::string> s = to_text_if_encodable(value, what)) return std::move(*s);
  fail(ErrorCode::InvalidArgument, what, " ", std::string(py::repr(value)),
       " cannot be stored: it holds a lone surrogate, which UTF-8 cannot encode");
}

double to_real(py::handle value, const char* what) {
  PyObject* v = value.ptr();
  const PyNumberMethods* nb = Py_TYPE(v)->tp_as_number;
  if (PyBool_Check(v) || nb == nullptr || (nb->nb_float == nullptr && nb->nb_index == nullptr)) {
    fail(ErrorCode::InvalidArgument, what, " must be a real number; got ", Py_TYPE(v)->tp_name);
  }
  const double d = PyFloat_AsDouble(v);
  if (d == -1.0 && PyErr_Occurred()) {
    if (!PyErr_ExceptionMatches(PyExc_OverflowError) && !PyErr_ExceptionMatches(PyExc_TypeError)) {
      throw py::error_already_set();
    }
    PyErr_Clear();
    fail(ErrorCode::InvalidArgument, what, " of type ", Py_TYPE(v)->tp_name, " does not fit in a float64");
  }
  return d;
}

std::string to_fs_path(py::handle value, const char* what) {
  py::object encoded;
  try {
    encoded = py::module_::import("os").attr("fsencode")(value);
  } catch (const py::error_already_set&) {
    fail(ErrorCode::InvalidArgument, what, " must be a str, bytes or os.PathLike; got ", Py_TYPE(value.ptr())->tp_name);
  }
  return encoded.cast<std::string>();
}

py::str fs_str(std::string_view path) {
  PyObject* s = PyUnicode_DecodeFSDefaultAndSize(path.data(), static_cast<Py_ssize_t>(path.size()));
  if (s == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

py::str lenient_str(std::string_view text) {
  PyObject* s = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "backslashreplace");
  if (s == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

bool to_flag(py::handle value, const char* what) {
  if (PyBool_Check(value.ptr())) return value.ptr() == Py_True;
  if (py::isinstance(value, py::module_::import("numpy").attr("bool_"))) return PyObject_IsTrue(value.ptr()) == 1;
  fail(ErrorCode::InvalidArgument, what, " must be True or False; got ", Py_TYPE(value.ptr())->tp_name);
}

MetaValue to_meta_value(const std::string& key, py::handle value) {
  if (PyUnicode_Check(value.ptr())) return MetaValue{to_text(value, ("metadata value for '" + key + "'").c_str()), false};
  if (PyBytes_Check(value.ptr())) return MetaValue{std::string(value.cast<py::bytes>()), true};
  fail(ErrorCode::InvalidArgument, "metadata value for '", key, "' must be str or bytes; got ",
       Py_TYPE(value.ptr())->tp_name);
}

std::optional<Epoch> to_epoch(py::handle value) {
  if (value.is_none()) return std::nullopt;
  return to_u64(value, "expect_epoch");
}

py::dtype numpy_dtype(DType t) {
  // Built once per type and kept for the process: dtype construction from a name is slow, and
  // these handles must outlive the interpreter's module teardown order.
  static std::array<PyObject*, 15> cache{};
  auto& slot = cache[static_cast<std::size_t>(t)];
  if (slot == nullptr) {
    const std::string_view name = t == DType::Raw ? "uint8" : dtype_name(t);
    slot = py::dtype(std::string(name)).release().ptr();
  }
  return py::reinterpret_borrow<py::dtype>(slot);
}

DType dtype_from_python(py::handle dtype) {
  // Canonical names ("float32") skip NumPy's dtype parser, which dominates create_page otherwise.
  if (PyUnicode_Check(dtype.ptr())) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(dtype.ptr(), &n);
    if (s != nullptr) {
      if (std::optional<DType> t = find_dtype({s, static_cast<std::size_t>(n)})) return *t;
    }
    PyErr_Clear();
  }
  py::dtype d;
  try {
    d = py::dtype::from_args(py::reinterpret_borrow<py::object>(dtype));
  } catch (py::error_already_set&) {
    fail(ErrorCode::InvalidArgument, "dtype ", std::string(py::repr(dtype)), " is not a NumPy dtype");
  }
  if (d.byteorder() == '>') {
    fail(ErrorCode::InvalidArgument, "big-endian dtype ", std::string(py::str(d)), " is not supported");
  }
  return dtype_from_kind(d.kind(), static_cast<std::size_t>(d.itemsize()));
}

namespace {
// The items of a 1-D object array as uint64, each an int (not a bool) in [0, 2^64).
py::array_t<std::uint64_t> u64_items(const py::array& items, const char* what, ErrorCode code) {
  py::array_t<std::uint64_t> out(items.size());
  std::uint64_t* dst = out.mutable_data();
  for (py::ssize_t i = 0; i < items.size(); ++i) {
    const py::object item = items.attr("__getitem__")(i);
    PyObject* index = PyBool_Check(item.ptr()) ? nullptr : PyNumber_Index(item.ptr());
    if (index == nullptr) {
      PyErr_Clear();
      fail(code, what, "[", i, "] is not an integer (", std::string(py::repr(item)), ")");
    }
    const auto value = py::reinterpret_steal<py::int_>(index);
    if (value < py::int_(0)) fail(code, what, "[", i, "] is negative (", std::string(py::str(value)), ")");
    const unsigned long long v = PyLong_AsUnsignedLongLong(value.ptr());
    if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred() != nullptr) {
      PyErr_Clear();
      fail(code, what, "[", i, "] is past 2**64 - 1 (", std::string(py::str(value)), ")");
    }
    dst[i] = v;
  }
  return out;
}
}  // namespace

py::array_t<std::uint64_t> u64_column(py::handle values, const char* what, ErrorCode code) {
  // The usual column, a 1-D C-contiguous uint64 array, is taken as it is: numpy.asarray and the
  // module lookup took a batch 4.4 us to build instead of 0.8 (test_delta_batch_build in
  // benchmarks/test_bench_api.py), a quarter of a 64-row flush commit.
  using Column = py::array_t<std::uint64_t, py::array::c_style>;
  if (Column::check_(values) && py::reinterpret_borrow<py::array>(values).ndim() == 1) {
    return py::reinterpret_borrow<py::array_t<std::uint64_t>>(values);
  }
  py::module_ np = py::module_::import("numpy");
  py::array arr;
  try {
    arr = np.attr("asarray")(values);
  } catch (py::error_already_set& e) {  // ragged lists, objects NumPy cannot take
    fail(code, what, " is not a column of integers: ", user_error_message(e));
  }
  if (arr.ndim() != 1) {
    fail(code, what, " must be one-dimensional; got ", arr.ndim(), " dimensions");
  }
  const char kind = arr.dtype().kind();
  // Python ints past 2^63 beside small ones make NumPy choose float64 (or object) for a list:
  // those are read one by one, exactly.
  if (arr.size() > 0 && (kind == 'f' || kind == 'O') && !py::isinstance<py::array>(values)) {
    return u64_items(np.attr("asarray")(values, py::arg("dtype") = "object"), what, code);
  }
  if (arr.size() > 0 && kind != 'i' && kind != 'u') {
    fail(code, what, " must hold integers; got dtype ", std::string(py::str(arr.dtype())));
  }
  if (kind == 'i' && arr.size() > 0) {
    py::array negative = np.attr("flatnonzero")(np.attr("less")(arr, 0));
    if (negative.size() > 0) {
      const auto row = negative.attr("__getitem__")(0).cast<std::int64_t>();
      fail(code, what, "[", row, "] is negative (",
           std::string(py::str(arr.attr("__getitem__")(row))), ")");
    }
  }
  return py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
}

}  // namespace mmsb::py_bind
