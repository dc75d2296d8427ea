// Bus.create_page's arguments: size, shape and dtype, initial data (any buffer or array-like),
// name and metadata, checked against each other before the page is created.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "BindDelta.hpp"
#include "Bindings.hpp"
#include "Convert.hpp"
#include "ErrorTranslator.hpp"
#include "mmsb/core/Error.hpp"

namespace mmsb::py_bind {
namespace py = pybind11;

namespace {

std::vector<std::uint64_t> parse_shape(py::handle shape) {
  std::vector<std::uint64_t> out;
  if (PyLong_Check(shape.ptr()) || PyIndex_Check(shape.ptr())) {
    out.push_back(to_u64(shape, "shape"));
    return out;
  }
  if (!PySequence_Check(shape.ptr())) {
    fail(ErrorCode::InvalidArgument, "shape must be an int or a sequence of ints; got ",
         Py_TYPE(shape.ptr())->tp_name);
  }
  for (py::handle d : py::reinterpret_borrow<py::sequence>(shape)) out.push_back(to_u64(d, "shape entry"));
  return out;
}

std::uint64_t shape_bytes(const std::vector<std::uint64_t>& shape, DType t) {
  std::uint64_t n = dtype_itemsize(t);
  for (std::uint64_t d : shape) {
    if (d != 0 && n > PageTable::kMaxPageSize / d) {
      fail(ErrorCode::InvalidArgument, "shape describes more than ", PageTable::kMaxPageSize,
           " bytes, the page size limit");
    }
    n *= d;
  }
  return n;
}

Metadata parse_metadata(py::handle md) {
  Metadata out;
  if (md.is_none()) return out;
  if (!PyDict_Check(md.ptr())) {
    fail(ErrorCode::InvalidArgument, "metadata must be a dict of str -> str/bytes; got ",
         Py_TYPE(md.ptr())->tp_name);
  }
  for (auto [k, v] : py::reinterpret_borrow<py::dict>(md)) {
    const std::string key = to_text(k, "metadata key");
    out.insert_or_assign(key, to_meta_value(key, v));
  }
  return out;
}

}  // namespace

py::object create_page(const std::shared_ptr<Bus>& bus, py::handle size, py::handle shape,
                       py::handle dtype, py::handle data, py::handle name, py::handle metadata,
                       py::handle location) {
  wait_turn(*bus);
  PageSpec spec;
  spec.location = to_text(location, "location");
  if (!name.is_none()) {
    spec.name = to_text(name, "name");
    if (spec.name.empty()) fail(ErrorCode::InvalidArgument, "name must not be empty (use None for no name)");
  }
  spec.metadata = parse_metadata(metadata);
  const std::optional<DType> asked =
      dtype.is_none() ? std::nullopt : std::optional<DType>(dtype_from_python(dtype));
  std::optional<std::vector<std::uint64_t>> asked_shape;
  if (!shape.is_none()) asked_shape = parse_shape(shape);

  std::optional<ByteBuffer> initial;
  py::object converted;
  if (!data.is_none()) {
    py::handle src = data;
    if (!PyObject_CheckBuffer(data.ptr())) {
      try {
        converted = py::module_::import("numpy").attr("asarray")(data);
      } catch (py::error_already_set& e) {
        fail(ErrorCode::InvalidArgument, "data of type ", Py_TYPE(data.ptr())->tp_name,
             " is not an array NumPy can build: ", user_error_message(e));
      }
      src = converted;
    }
    const bool raw_bytes = PyBytes_Check(src.ptr()) || PyByteArray_Check(src.ptr());
    initial.emplace(src, "data", !raw_bytes);
    spec.size = initial->bytes().size();
    if (raw_bytes) {
      spec.dtype = asked.value_or(DType::Raw);
    } else {
      spec.dtype = initial->dtype();
      if (asked && *asked != spec.dtype) {
        fail(ErrorCode::InvalidArgument, "data has dtype ", dtype_name(spec.dtype), " but dtype=",
             dtype_name(*asked), " was asked; convert the data with .astype() first");
      }
      spec.shape = initial->shape();
    }
    if (asked_shape) {
      if (spec.dtype == DType::Raw) fail(ErrorCode::InvalidArgument, "a shape needs a dtype");
      if (shape_bytes(*asked_shape, spec.dtype) != spec.size) {
        fail(ErrorCode::InvalidArgument, "shape ", std::string(py::str(shape)), " of ",
             dtype_name(spec.dtype), " does not match the ", spec.size, " bytes of data");
      }
      spec.shape = *asked_shape;
    }
    if (!size.is_none() && to_u64(size, "size") != spec.size) {
      fail(ErrorCode::InvalidArgument, "size=", to_u64(size, "size"), " but data has ", spec.size, " bytes");
    }
  } else {
    spec.dtype = asked.value_or(DType::Raw);
    if (asked_shape) {
      if (!asked) fail(ErrorCode::InvalidArgument, "a shape needs a dtype (e.g. dtype='float32')");
      spec.size = shape_bytes(*asked_shape, spec.dtype);
      spec.shape = *asked_shape;
      if (!size.is_none() && to_u64(size, "size") != spec.size) {
        fail(ErrorCode::InvalidArgument, "size=", to_u64(size, "size"), " but shape ",
             std::string(py::str(shape)), " of ", dtype_name(spec.dtype), " is ", spec.size, " bytes");
      }
    } else if (!size.is_none()) {
      spec.size = to_u64(size, "size");
    } else {
      fail(ErrorCode::InvalidArgument,
           "create_page needs a size in bytes, a shape and dtype, or data");
    }
  }
  const PageRecord& r = bus->create_page(
      spec, initial ? initial->bytes() : std::span<const std::byte>{});
  return make_page(bus, r.id);
}

}  // namespace mmsb::py_bind
