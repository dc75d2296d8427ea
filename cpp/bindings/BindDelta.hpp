#pragma once
#include <pybind11/numpy.h>

#include <memory>

#include "Convert.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb::py_bind {

/// mmsb.Delta: an engine Delta that remembers which bus its Page came from (0 when it was built
/// from a bare id), so applying it to another bus is refused instead of hitting a page there
/// that merely shares the id.
struct PyDelta : Delta {
  PyDelta() = default;
  PyDelta(Delta d, std::uint64_t from) : Delta(std::move(d)), origin(from) {}
  std::uint64_t origin = 0;
};

/// The Delta `item` is, for `bus` to commit in `call` (apply, submit). Throws Error(InvalidArgument)
/// naming the type when it is not an mmsb.Delta, Error(PageNotFound) when it was built from a page
/// of another bus.
PyDelta& delta_for(const Bus& bus, pybind11::handle item, const char* call);

/// mmsb.DeltaBatch: columnar rows kept as NumPy arrays (no copy when they already are uint64 and
/// contiguous) plus the payload's buffer export, held for the batch's lifetime.
struct PyDeltaBatch {
  pybind11::array_t<std::uint64_t> page_ids;
  pybind11::array_t<std::uint64_t> offsets;
  pybind11::array_t<std::uint64_t> lengths;
  pybind11::object payload_owner;
  std::unique_ptr<ByteBuffer> payload;

  DeltaBatchView view() const {
    return {{page_ids.data(), static_cast<std::size_t>(page_ids.size())},
            {offsets.data(), static_cast<std::size_t>(offsets.size())},
            {lengths.data(), static_cast<std::size_t>(lengths.size())},
            payload->bytes()};
  }
};

}  // namespace mmsb::py_bind
