#pragma once
// Conversions between Python objects and engine values, shared by every binding file.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mmsb/engine/Bus.hpp"
#include "mmsb/page/DType.hpp"

namespace mmsb::py_bind {

namespace py = pybind11;

/// A contiguous read-only byte view of any buffer-protocol object; released on destruction.
/// Throws Error(InvalidArgument) naming `what` for non-buffers, non-C-contiguous buffers and
/// buffers of Python objects (NumPy dtype=object: their bytes are addresses). Without
/// `want_format`, dtype() reads every buffer as bytes.
class ByteBuffer {
 public:
  ByteBuffer(py::handle obj, const char* what, bool want_format = false);
  ~ByteBuffer() { PyBuffer_Release(&view_); }
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;
  std::span<const std::byte> bytes() const noexcept {
    return {static_cast<const std::byte*>(view_.buf), static_cast<std::size_t>(view_.len)};
  }
  const Py_buffer& view() const noexcept { return view_; }
  /// Element type of the buffer (from its struct format, with `want_format`); throws for
  /// unsupported formats.
  DType dtype() const;
  std::vector<std::uint64_t> shape() const;

 private:
  Py_buffer view_{};
  bool typed_ = false;
};

/// Python int -> uint64; negative, too large or non-int values raise InvalidArgument naming `what`.
std::uint64_t to_u64(py::handle value, const char* what);
/// Python int -> int; values outside int's range, and non-int values, raise InvalidArgument
/// naming `what`.
int to_int(py::handle value, const char* what);
/// A str argument as UTF-8. A non-str value, or a str UTF-8 cannot hold (a lone surrogate such
/// as '\ud800'), raises InvalidArgument naming `what`.
std::string to_text(py::handle value, const char* what);
/// As to_text, or nullopt for a str UTF-8 cannot hold: a name no page can have (lookups say
/// "not found" where to_text would say "bad argument"). Non-str values raise as to_text.
std::optional<std::string> to_text_if_encodable(py::handle value, const char* what);
/// A filesystem path (str, bytes or os.PathLike) as the bytes the OS gets, as os.fsencode gives
/// them (a str's undecodable bytes come back from their surrogate escapes); anything else raises
/// InvalidArgument naming `what`.
std::string to_fs_path(py::handle value, const char* what);
/// A path or file name from the OS as Python's str for it, as os.fsdecode gives it (bytes UTF-8
/// cannot decode become surrogate escapes, never an error).
py::str fs_str(std::string_view path);
/// Text the engine made, which may quote bytes from a file (a path, a name in a damaged log), as
/// str: bytes that are not UTF-8 become backslash escapes, never an error.
py::str lenient_str(std::string_view text);
/// A real-number argument: int, float or anything with __float__ (NumPy scalars); bool, str and
/// other types raise InvalidArgument naming `what`.
double to_real(py::handle value, const char* what);
/// A flag argument: True/False or a NumPy bool; anything else raises InvalidArgument naming `what`
/// (a truthy "yes" must not silently mean True).
bool to_flag(py::handle value, const char* what);
/// A metadata value: str (stored as UTF-8) or bytes; anything else raises InvalidArgument naming
/// the entry's `key`.
MetaValue to_meta_value(const std::string& key, py::handle value);
/// Optional epoch: None -> nullopt.
std::optional<Epoch> to_epoch(py::handle value);

/// NumPy dtype object for a page dtype (cached; Raw maps to uint8).
py::dtype numpy_dtype(DType t);
/// Page dtype for anything numpy.dtype() accepts; raises InvalidArgument for unsupported types.
DType dtype_from_python(py::handle dtype);

/// A C-contiguous 1-D uint64 array from any integer sequence/array (Python ints up to 2^64 - 1
/// exactly). Negative or non-integer input raises `code` naming the column and the first bad row.
py::array_t<std::uint64_t> u64_column(py::handle values, const char* what, ErrorCode code = ErrorCode::InvalidDelta);

}  // namespace mmsb::py_bind
