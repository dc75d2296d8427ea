#pragma once
// Conversions between Python objects and engine values, shared by every binding file.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "mmsb/engine/Bus.hpp"
#include "mmsb/page/DType.hpp"

namespace mmsb::py_bind {

namespace py = pybind11;

/// A contiguous read-only byte view of any buffer-protocol object; released on destruction.
/// Throws Error(InvalidArgument) naming `what` for non-buffers and non-C-contiguous buffers.
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
  /// Element type of the buffer (from its struct format); throws for unsupported formats.
  DType dtype() const;
  std::vector<std::uint64_t> shape() const;

 private:
  Py_buffer view_{};
};

/// Python int -> uint64; negative, too large or non-int values raise InvalidArgument naming `what`.
std::uint64_t to_u64(py::handle value, const char* what);
/// Optional epoch: None -> nullopt.
std::optional<Epoch> to_epoch(py::handle value);

/// NumPy dtype object for a page dtype (cached; Raw maps to uint8).
py::dtype numpy_dtype(DType t);
/// Page dtype for anything numpy.dtype() accepts; raises InvalidArgument for unsupported types.
DType dtype_from_python(py::handle dtype);

/// A C-contiguous 1-D uint64 array from any integer sequence/array. Negative or non-integer
/// input raises InvalidDelta naming the column and the first bad row.
py::array_t<std::uint64_t> u64_column(py::handle values, const char* what);

}  // namespace mmsb::py_bind
