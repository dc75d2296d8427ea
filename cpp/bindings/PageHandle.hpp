#pragma once
// The Python-visible Page: a pinned reference to one page of a bus.
#include <pybind11/pybind11.h>

#include <memory>
#include <optional>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb::py_bind {

/// Waits, with the GIL released, while another thread's transaction holds the bus: that thread
/// needs the GIL to finish it. Every binding calls this before an engine call that may wait.
inline void wait_turn(Bus& bus) {
  if (bus.must_wait()) {
    pybind11::gil_scoped_release release;
    bus.wait_for_turn();
  }
}

/// Holds the bus alive and the page's memory pinned for as long as the handle (or any view or
/// export whose base it is) lives, so views stay valid after the Page and Bus objects are dropped
/// and even after the page is deleted. Thread safety: immutable; record reads are atomic.
struct PageHandle {
  PageHandle(std::shared_ptr<Bus> owner, PageId page)
      : bus(std::move(owner)), rec(&bus->pin(page)), id(page) {}
  /// For a record the caller already holds under the bus lock (a recompute's parents): pins it
  /// without taking the lock again.
  PageHandle(std::shared_ptr<Bus> owner, PageRecord& record)
      : bus(std::move(owner)), rec(&record), id(record.id) {
    PageTable::pin(record);
  }
  ~PageHandle() { bus->unpin(*rec); }
  PageHandle(const PageHandle&) = delete;
  PageHandle& operator=(const PageHandle&) = delete;

  /// The record if the bus is open and the page not deleted; throws Closed / PageNotFound.
  PageRecord& live() const {
    wait_turn(*bus);
    if (bus->closed()) fail(ErrorCode::Closed, "the bus of page ", id, " is closed");
    if (rec->deleted()) fail(ErrorCode::PageNotFound, "page ", id, " was deleted");
    return *rec;
  }
  /// Element shape: the page's shape if typed, else (size,).
  const std::vector<std::uint64_t>& shape() const {
    if (!shape_cache) {
      PageInfo info = bus->page_info(id);
      shape_cache = info.shape.empty() ? std::vector<std::uint64_t>{rec->size} : info.shape;
    }
    return *shape_cache;
  }

  std::shared_ptr<Bus> bus;
  PageRecord* rec;
  PageId id;
  mutable std::optional<std::vector<std::uint64_t>> shape_cache;
};

}  // namespace mmsb::py_bind
