#pragma once
#include <pybind11/numpy.h>

#include <algorithm>
#include <memory>
#include <vector>

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

  /// The columns as they are now: valid while the GIL is held (they may be the caller's arrays).
  DeltaBatchView view() const {
    return {{page_ids.data(), static_cast<std::size_t>(page_ids.size())},
            {offsets.data(), static_cast<std::size_t>(offsets.size())},
            {lengths.data(), static_cast<std::size_t>(lengths.size())},
            payload->bytes()};
  }
  /// The columns copied into `columns` (the payload is not copied), for a call that releases the
  /// GIL: another thread, or the bus's clock callable, may change the caller's arrays meanwhile,
  /// and the rows the engine validated must be the rows it applies and logs. Call with the GIL.
  DeltaBatchView snapshot(std::vector<std::uint64_t>& columns) const {
    const DeltaBatchView now = view();
    const std::size_t n = now.rows();
    columns.resize(3 * n);
    std::copy(now.page_ids.begin(), now.page_ids.end(), columns.begin());
    std::copy(now.offsets.begin(), now.offsets.end(), columns.begin() + static_cast<std::ptrdiff_t>(n));
    std::copy(now.lengths.begin(), now.lengths.end(), columns.begin() + static_cast<std::ptrdiff_t>(2 * n));
    const std::span<const std::uint64_t> all(columns);
    return {all.first(n), all.subspan(n, n), all.subspan(2 * n, n), now.payload};
  }
};

}  // namespace mmsb::py_bind
