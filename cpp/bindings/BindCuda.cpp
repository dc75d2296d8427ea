// NCCL and the Replicator, seen from Python as mmsb.cuda.nccl_available(), nccl_version() and
// Replicator. Blocking calls (construction, broadcast, receive, check) release the GIL: ranks
// may be threads of one process, and a rank waits for the others inside them.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <sstream>

#include "Bindings.hpp"
#include "Convert.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Nccl.hpp"
#include "mmsb/cuda/Replicator.hpp"

namespace mmsb::py_bind {
namespace py = pybind11;
using namespace pybind11::literals;
using cuda::Replicator;

namespace {

// A 1-D array or sequence of non-negative integers (any NumPy integer dtype), as uint64.
std::vector<std::uint64_t> index_column(py::handle values, const char* what) {
  const py::array_t<std::uint64_t> column = u64_column(values, what, ErrorCode::InvalidArgument);
  return {column.data(), column.data() + column.size()};
}

cuda::NcclUniqueId unique_id_of(py::handle value) {
  const ByteBuffer buf(value, "unique_id");
  cuda::NcclUniqueId id{};
  if (buf.bytes().size() != sizeof id.internal) {
    fail(ErrorCode::InvalidArgument, "unique_id must be the ", sizeof id.internal,
         " bytes Replicator.unique_id() returned; got ", buf.bytes().size());
  }
  std::memcpy(id.internal, buf.bytes().data(), sizeof id.internal);
  return id;
}

std::string repr(const Replicator& r) {
  std::uint64_t bytes = 0;
  for (std::uint64_t s : r.page_sizes()) bytes += s;
  std::ostringstream out;
  out << "<mmsb.cuda.Replicator rank " << r.rank() << " of " << r.nranks() << " on cuda:" << r.ordinal() << ": "
      << r.page_sizes().size() << " pages, " << bytes << " B, tick " << r.ticks() << ">";
  return out.str();
}

}  // namespace

void bind_cuda(py::module_& m) {
  m.def("nccl_available", &cuda::nccl_available,
        "True when this build has NCCL support, libnccl loads (at run time) and a CUDA device is usable.");
  m.def("nccl_version", &cuda::nccl_version, "NCCL's version ('2.28.9'), or '' when libnccl cannot be loaded.");

  py::class_<Replicator, std::shared_ptr<Replicator>>(m, "Replicator",
                         "Replicas of device pages kept identical on every rank by broadcasting each tick's "
                         "rows from rank 0 over NCCL.")
      .def_static("unique_id", [] {
        const cuda::NcclUniqueId id = Replicator::unique_id();
        return py::bytes(id.internal, sizeof id.internal);
      }, "A new 128-byte bootstrap id; make it on rank 0 and hand it to every rank.")
      .def(py::init([](py::handle nranks, py::handle rank, py::handle unique_id, py::handle ordinal,
                       py::handle page_sizes) {
             const int n = to_int(nranks, "nranks");
             const int r = to_int(rank, "rank");
             const int device = to_int(ordinal, "ordinal");
             const cuda::NcclUniqueId id = unique_id_of(unique_id);
             std::vector<std::uint64_t> sizes = index_column(page_sizes, "page_sizes");
             py::gil_scoped_release release;  // waits for every rank to join
             return std::make_shared<Replicator>(n, r, id, device, std::move(sizes));
           }),
           "nranks"_a, "rank"_a, "unique_id"_a, "ordinal"_a, "page_sizes"_a)
      .def("broadcast", [](Replicator& r, py::handle pages, py::handle offsets, py::handle lengths,
                           py::handle payload) {
        // The bus broadcasts every tick: a row of the caller's between them would leave the
        // replicas unlike the pages they follow, and nothing would say so until check().
        if (r.attached()) {
          fail(ErrorCode::InvalidArgument, "Replicator.broadcast: a bus feeds this replicator (bus.replicate); its ",
               "ticks broadcast, so call it only after bus.replicate(None)");
        }
        const auto p = index_column(pages, "pages");
        const auto o = index_column(offsets, "offsets");
        const auto l = index_column(lengths, "lengths");
        if (o.size() != p.size() || l.size() != p.size()) {
          fail(ErrorCode::InvalidArgument, "Replicator.broadcast: pages, offsets and lengths must be equally long; got ",
               p.size(), ", ", o.size(), " and ", l.size());
        }
        std::vector<cuda::ReplicaRow> rows(p.size());
        for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = {p[i], o[i], l[i]};
        const ByteBuffer data(payload, "payload");
        py::gil_scoped_release release;
        r.broadcast(rows, data.bytes());
      }, "pages"_a, "offsets"_a, "lengths"_a, "payload"_a,
         "Rank 0: send this tick's rows (replica page, offset, length; payload in row order) and apply them.")
      .def("receive", &Replicator::receive, py::call_guard<py::gil_scoped_release>(),
           "Ranks other than 0: receive rank 0's next batch and apply it.")
      .def("hash", &Replicator::hash, py::call_guard<py::gil_scoped_release>(),
           "64-bit hash of all replicas (FNV-1a 64 over each page's size and CRC32C).")
      .def("check", &Replicator::check, py::call_guard<py::gil_scoped_release>(),
           "Collective: True when every rank's hash() equals rank 0's.")
      .def("read", [](Replicator& r, py::handle page) {
        const std::uint64_t index = to_u64(page, "page");
        std::vector<std::byte> data;
        {
          py::gil_scoped_release release;
          data = r.read(index);
        }
        return py::bytes(reinterpret_cast<const char*>(data.data()), data.size());
      }, "page"_a, "A copy of replica page `page` as bytes.")
      .def_property_readonly("nranks", &Replicator::nranks)
      .def_property_readonly("rank", &Replicator::rank)
      .def_property_readonly("ordinal", &Replicator::ordinal)
      .def_property_readonly("page_sizes", &Replicator::page_sizes)
      .def_property_readonly("ticks", &Replicator::ticks)
      .def("__repr__", &repr);

  auto bus = py::reinterpret_borrow<py::class_<Bus, std::shared_ptr<Bus>>>(m.attr("Bus"));
  bus.def("replicate", [](const std::shared_ptr<Bus>& b, py::handle replicator, py::handle pages) {
        if (!replicator.is_none() && !py::isinstance<Replicator>(replicator)) {
          fail(ErrorCode::InvalidArgument, "replicator must be an mmsb.cuda.Replicator or None; got ",
               Py_TYPE(replicator.ptr())->tp_name);
        }
        std::shared_ptr<Replicator> r = replicator.cast<std::shared_ptr<Replicator>>();
        wait_turn(*b);
        std::vector<PageId> ids;
        if (r) ids = page_list(b, pages, "pages");
        py::gil_scoped_release release;  // attaching broadcasts: a collective
        b->replicate(std::move(r), std::move(ids));
      }, "replicator"_a, "pages"_a = py::none(),
      "Keep `replicator`'s replicas (rank 0 of its group) equal to `pages` at the end of every tick: "
      "each tick broadcasts once (the other ranks call receive() once per tick). None detaches.");
}

}  // namespace mmsb::py_bind
