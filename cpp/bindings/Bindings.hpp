#pragma once
// Entry points of each binding file, and the page-key helpers they share.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <vector>

#include "PageHandle.hpp"

namespace mmsb::py_bind {

void bind_page(pybind11::module_& m);
void bind_bus(pybind11::module_& m);
void bind_delta(pybind11::module_& m);
void bind_inspect(pybind11::module_& m);
void bind_graph(pybind11::module_& m);
void bind_tick(pybind11::module_& m);
void bind_cuda(pybind11::module_& m);

/// Installs the GIL-releasing blocking hooks on a new bus and returns it.
std::shared_ptr<Bus> adopt_bus(std::shared_ptr<Bus> bus);
/// Read-only array of `shape` over `data`, the host bytes of `r` that a wave resolved (the bus
/// lock is held there), for a recompute: it pins `r` and keeps `bus` alive as a Page's view does,
/// without creating a Page. Called with the GIL held.
pybind11::array parent_view(const std::shared_ptr<Bus>& bus, PageRecord& r, const std::vector<std::uint64_t>& shape,
                            const std::byte* data);

/// A new pinned Python Page for a live page.
pybind11::object make_page(const std::shared_ptr<Bus>& bus, PageId id);
/// Pages for `ids` read under the bus lock, leaving out those deleted since (by another thread).
pybind11::list make_pages(const std::shared_ptr<Bus>& bus, const std::vector<PageId>& ids);
/// Bus.create_page: a page from a size, a shape and dtype, or data (name and metadata optional),
/// the arguments checked against each other first; returns its Page. Error(InvalidArgument)
/// naming the argument that does not fit, and nothing created.
pybind11::object create_page(const std::shared_ptr<Bus>& bus, pybind11::handle size, pybind11::handle shape,
                             pybind11::handle dtype, pybind11::handle data, pybind11::handle name,
                             pybind11::handle metadata, pybind11::handle location);
/// Page id for a key: a Page of this bus, an int id or a str name. Raises PageNotFound (also for
/// a Page of another bus) or InvalidArgument for other types.
PageId resolve_page(const std::shared_ptr<Bus>& bus, pybind11::handle key);
/// Page ids for a page key or a sequence of them (resolve_page each); InvalidArgument naming
/// `what` for an empty sequence.
std::vector<PageId> page_list(const std::shared_ptr<Bus>& bus, pybind11::handle seq, const char* what);
/// Page id for a Delta constructor: a Page or an int id (no bus to resolve names against).
PageId page_id_of(pybind11::handle key);
/// Page id of a Page of `bus` or an int id, live or deleted (history outlives a page). Raises
/// PageNotFound for a Page of another bus, InvalidArgument for other types.
PageId page_id_of(const std::shared_ptr<Bus>& bus, pybind11::handle key);

}  // namespace mmsb::py_bind
