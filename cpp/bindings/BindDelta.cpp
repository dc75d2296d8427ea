// mmsb.Delta and mmsb.DeltaBatch.
#include "BindDelta.hpp"

#include <pybind11/stl.h>

#include "Bindings.hpp"
#include "mmsb/core/Error.hpp"

namespace mmsb::py_bind {
namespace py = pybind11;
using namespace pybind11::literals;

namespace {

// Wraps a freshly built delta with its origin bus and the caller's options.
PyDelta finish(Delta d, py::handle page, py::handle expect_epoch, py::handle source) {
  const std::uint64_t origin =
      py::isinstance<PageHandle>(page) ? page.cast<const PageHandle&>().bus->instance_id() : 0;
  PyDelta out(std::move(d), origin);
  out.expect_epoch = to_epoch(expect_epoch);
  out.source = parse_source(to_text(source, "source"));
  return out;
}

// Mask as bytes over the page: element masks of typed pages are widened to their item size.
std::vector<std::uint8_t> byte_mask(py::handle page, const ByteBuffer& mask) {
  if (mask.view().itemsize != 1) {
    fail(ErrorCode::InvalidDelta, "mask must be bool or uint8 (one entry per byte or element); got ",
         mask.view().itemsize, "-byte items");
  }
  const auto raw = mask.bytes();
  std::vector<std::uint8_t> out(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) out[i] = raw[i] != std::byte{0};
  if (!py::isinstance<PageHandle>(page)) return out;
  const PageHandle& h = page.cast<const PageHandle&>();
  const PageRecord& r = h.live();
  const std::size_t item = dtype_itemsize(r.dtype);
  if (out.size() == r.size) return out;
  if (item > 1 && out.size() * item == r.size) {
    std::vector<std::uint8_t> wide(r.size);
    for (std::size_t i = 0; i < out.size(); ++i) std::fill_n(wide.begin() + i * item, item, out[i]);
    return wide;
  }
  fail(ErrorCode::InvalidDelta, "mask has ", out.size(), " entries but page ", h.id, " has ", r.size,
       " bytes", item > 1 ? " or " + std::to_string(r.size / item) + " elements" : std::string());
}

// A list, tuple or other sequence (not a str or bytes, which are one value, nor an iterator,
// which would be consumed by a first look).
py::sequence sequence_arg(py::handle value, const char* what) {
  if (PySequence_Check(value.ptr()) == 0 || PyUnicode_Check(value.ptr()) || PyBytes_Check(value.ptr()) ||
      PyByteArray_Check(value.ptr())) {
    fail(ErrorCode::InvalidArgument, what, " must be a list or tuple; got ", Py_TYPE(value.ptr())->tp_name);
  }
  return py::reinterpret_borrow<py::sequence>(value);
}

const PyDelta& delta_arg(py::handle value, const char* what) {
  if (!py::isinstance<PyDelta>(value)) {
    fail(ErrorCode::InvalidArgument, what, " must be an mmsb.Delta; got ", Py_TYPE(value.ptr())->tp_name);
  }
  return value.cast<const PyDelta&>();
}

py::array_t<std::uint64_t> run_column(const Delta& d, bool offsets) {
  const auto& runs = d.run_list();
  py::array_t<std::uint64_t> out(static_cast<py::ssize_t>(runs.size()));
  auto* p = out.mutable_data();
  for (std::size_t i = 0; i < runs.size(); ++i) p[i] = offsets ? runs[i].offset : runs[i].length;
  return out;
}

}  // namespace

PyDelta& delta_for(const Bus& bus, py::handle item, const char* call) {
  if (!py::isinstance<PyDelta>(item)) {
    fail(ErrorCode::InvalidArgument, call, "() takes an mmsb.Delta", std::string_view(call) == "submit" ? " or mmsb.DeltaBatch" : "",
         ", not ", std::string(py::str(py::type::of(item).attr("__name__"))),
         py::isinstance<PyDeltaBatch>(item) ? "; commit a DeltaBatch with apply_batch()" : "");
  }
  PyDelta& d = item.cast<PyDelta&>();
  if (d.origin != 0 && d.origin != bus.instance_id()) {
    fail(ErrorCode::PageNotFound, "the delta was built from page ", d.page_id(),
         " of another bus; build it from this bus's page (or from a bare page id)");
  }
  return d;
}

void bind_delta(py::module_& m) {
  py::class_<PyDelta>(m, "Delta", "A change to one page: canonical byte runs and their payload.")
      .def_static("at", [](py::handle page, py::handle offset, py::handle data, py::handle expect_epoch,
                           py::handle source) {
        ByteBuffer buf(data, "data");
        return finish(Delta::at(page_id_of(page), to_u64(offset, "offset"), buf.bytes()), page,
                      expect_epoch, source);
      }, "page"_a, "offset"_a, "data"_a, py::kw_only(), "expect_epoch"_a = py::none(),
         "source"_a = "user", "One run of `data` at byte `offset`.")
      .def_static("runs", [](py::handle page, py::handle offsets_arg, py::handle datas_arg,
                             py::handle expect_epoch, py::handle source) {
        const py::sequence offsets = sequence_arg(offsets_arg, "offsets");
        const py::sequence datas = sequence_arg(datas_arg, "datas");
        if (offsets.size() != datas.size()) {
          fail(ErrorCode::InvalidDelta, "got ", offsets.size(), " offsets but ", datas.size(),
               " data buffers; each run needs one of each");
        }
        std::vector<std::uint64_t> offs, lens;
        std::vector<std::byte> payload;
        for (std::size_t i = 0; i < offsets.size(); ++i) {
          offs.push_back(to_u64(offsets[i], "offset"));
          ByteBuffer buf(datas[i], "run data");
          lens.push_back(buf.bytes().size());
          payload.insert(payload.end(), buf.bytes().begin(), buf.bytes().end());
        }
        return finish(Delta::runs(page_id_of(page), offs, lens, payload), page, expect_epoch, source);
      }, "page"_a, "offsets"_a, "datas"_a, py::kw_only(), "expect_epoch"_a = py::none(),
         "source"_a = "user", "Many runs; overlapping runs resolve to the last one given.")
      .def_static("masked", [](py::handle page, py::handle mask, py::handle data, py::handle packed,
                               py::handle extent, py::handle expect_epoch, py::handle source) {
        const bool bits_mask = to_flag(packed, "packed");
        ByteBuffer m(mask, "mask", true);
        ByteBuffer buf(data, "data");
        Delta d;
        if (bits_mask) {
          std::uint64_t ext = m.bytes().size() * 8;
          if (!extent.is_none()) ext = to_u64(extent, "extent");
          else if (py::isinstance<PageHandle>(page)) ext = page.cast<const PageHandle&>().live().size;
          const auto* bits = reinterpret_cast<const std::uint8_t*>(m.bytes().data());
          d = Delta::masked_packed(page_id_of(page), {bits, m.bytes().size()}, ext, buf.bytes());
        } else {
          d = Delta::masked(page_id_of(page), byte_mask(page, m), buf.bytes());
        }
        return finish(std::move(d), page, expect_epoch, source);
      }, "page"_a, "mask"_a, "data"_a, py::kw_only(), "packed"_a = false, "extent"_a = py::none(),
         "expect_epoch"_a = py::none(), "source"_a = "user",
         "Bytes (or elements of a typed page) where mask is true; data dense (whole extent) or "
         "sparse (only the marked items). packed=True: mask bits, little bit order.")
      .def_static("diff", [](py::handle page, py::handle old, py::handle now) {
        ByteBuffer a(old, "old");
        ByteBuffer b(now, "new");
        return finish(Delta::diff(page_id_of(page), a.bytes(), b.bytes()), page, py::none(), py::str("user"));
      }, "page"_a, "old"_a, "new"_a, "The minimal runs turning `old` into `new` (same byte length).")
      .def_static("merge", [](py::handle first, py::handle second) {
        const PyDelta& a = delta_arg(first, "first");
        const PyDelta& b = delta_arg(second, "second");
        if (a.origin != 0 && b.origin != 0 && a.origin != b.origin) {
          fail(ErrorCode::InvalidDelta, "cannot merge deltas built for pages of different buses");
        }
        return PyDelta(merge(a, b), a.origin != 0 ? a.origin : b.origin);
      }, "first"_a,
                  "second"_a, "One delta equal to applying `first` then `second`.")
      .def_property_readonly("page_id", &Delta::page_id)
      .def_property_readonly("offsets", [](const PyDelta& d) { return run_column(d, true); })
      .def_property_readonly("lengths", [](const PyDelta& d) { return run_column(d, false); })
      .def_property_readonly("run_list", [](const PyDelta& d) {
        py::list out;
        for (const Run& r : d.run_list()) out.append(py::make_tuple(r.offset, r.length));
        return out;
      })
      .def_property_readonly("payload", [](const PyDelta& d) {
        return py::bytes(reinterpret_cast<const char*>(d.payload().data()), d.payload().size());
      })
      .def_property_readonly("nbytes", [](const PyDelta& d) { return d.payload().size(); })
      .def_property("expect_epoch",
                    [](const PyDelta& d) -> py::object {
                      return d.expect_epoch ? py::object(py::int_(*d.expect_epoch)) : py::object(py::none());
                    },
                    [](PyDelta& d, py::handle v) { d.expect_epoch = to_epoch(v); })
      .def_property("source", [](const PyDelta& d) { return std::string(source_name(d.source)); },
                    [](PyDelta& d, py::handle s) { d.source = parse_source(to_text(s, "source")); })
      .def_property_readonly("timestamp_ns", [](const PyDelta& d) { return d.timestamp_ns; })
      .def_property_readonly("lsn", [](const PyDelta& d) { return d.lsn; })
      .def_property_readonly("epoch", [](const PyDelta& d) { return d.epoch; })
      .def("__len__", [](const PyDelta& d) { return d.run_list().size(); })
      .def("__eq__", [](const PyDelta& a, py::handle b) {
        if (!py::isinstance<PyDelta>(b)) return false;
        const PyDelta& o = b.cast<const PyDelta&>();
        return a.page_id() == o.page_id() && a.run_list() == o.run_list() &&
               std::equal(a.payload().begin(), a.payload().end(), o.payload().begin(), o.payload().end());
      })
      .def("__repr__", [](const PyDelta& d) {
        std::string s = "<mmsb.Delta page=" + std::to_string(d.page_id()) + " runs=" +
                        std::to_string(d.run_list().size()) + " bytes=" + std::to_string(d.payload().size());
        if (d.lsn != 0) s += " lsn=" + std::to_string(d.lsn) + " epoch=" + std::to_string(d.epoch);
        return s + ">";
      });

  py::class_<PyDeltaBatch>(m, "DeltaBatch",
                           "Columnar single-run deltas: row i writes lengths[i] bytes at offsets[i] "
                           "of page page_ids[i]; payload holds the rows' bytes back to back.")
      .def(py::init([](py::handle page_ids, py::handle offsets, py::handle lengths, py::handle payload) {
             // Built whole, in argument order: a default array_t member is a NumPy array of its
             // own, and three of them cost more than the rest of a one-row batch.
             auto b = std::unique_ptr<PyDeltaBatch>(new PyDeltaBatch{
                 u64_column(page_ids, "page_ids"), u64_column(offsets, "offsets"), u64_column(lengths, "lengths"),
                 py::reinterpret_borrow<py::object>(payload), std::make_unique<ByteBuffer>(payload, "payload")});
             b->view().check_shape();
             return b;
           }),
           "page_ids"_a, "offsets"_a, "lengths"_a, "payload"_a)
      .def_property_readonly("page_ids", [](const PyDeltaBatch& b) { return b.page_ids; })
      .def_property_readonly("offsets", [](const PyDeltaBatch& b) { return b.offsets; })
      .def_property_readonly("lengths", [](const PyDeltaBatch& b) { return b.lengths; })
      .def_property_readonly("nbytes", [](const PyDeltaBatch& b) { return b.payload->bytes().size(); })
      .def("__len__", [](const PyDeltaBatch& b) { return b.page_ids.size(); })
      .def("__repr__", [](const PyDeltaBatch& b) {
        return "<mmsb.DeltaBatch rows=" + std::to_string(b.page_ids.size()) +
               " bytes=" + std::to_string(b.payload->bytes().size()) + ">";
      });
}

}  // namespace mmsb::py_bind
