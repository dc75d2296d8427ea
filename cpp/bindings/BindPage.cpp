// mmsb.Page: zero-copy views, buffer protocol, DLPack, reads and single-delta writes.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "Bindings.hpp"
#include "Convert.hpp"
#include "ErrorTranslator.hpp"
#include "DLPack.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/engine/DeviceStaging.hpp"

namespace mmsb::py_bind {
namespace py = pybind11;
using namespace pybind11::literals;

namespace {

std::vector<py::ssize_t> ssize_shape(const PageHandle& h) {
  const auto& s = h.shape();
  return {s.begin(), s.end()};
}

// The base of an array aliasing a page's bytes: holds the page's handle (so the bus and the pin)
// and one export of the page (Bus::add_export), dropped when the last array or buffer using it
// dies, so that the page cannot move (p.to) while its address is out. The handle is a Page's, kept
// alive by `page`, or one of no Page, owned here: a recompute's parents need no Python Page, whose
// creation cost more than the rest of the call.
struct ExportToken {
  py::object page;
  std::unique_ptr<PageHandle> owned;
  const PageHandle* handle = nullptr;
  bool registered = false;
};

py::capsule export_token(std::unique_ptr<ExportToken> token) {
  py::capsule c(token.get(), [](void* p) {
    std::unique_ptr<ExportToken> t(static_cast<ExportToken*>(p));
    if (t->registered) t->handle->bus->drop_export(*t->handle->rec);
  });
  ExportToken* t = token.release();  // the capsule owns it now
  t->handle->bus->add_export(*t->handle->rec);
  t->registered = true;
  return c;
}

// A read-only array of `shape` over `data`, the bytes of the page whose export `base` is.
py::array export_array(DType dtype, const std::vector<std::uint64_t>& shape, const std::byte* data,
                       const py::capsule& base) {
  py::array a(numpy_dtype(dtype), std::vector<py::ssize_t>(shape.begin(), shape.end()), data, base);
  py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return a;
}

// A new array shaped like the page (typed pages) or of bytes (raw pages). With `page`, the array
// aliases the page's host bytes (Bus::host_bytes: a device page's mirror, refreshed), is
// read-only and holds an export of the page; without, it is a fresh writable array.
py::array page_array(const PageHandle& h, const PageRecord& r, py::handle page) {
  if (!page) return py::array(numpy_dtype(r.dtype), ssize_shape(h));
  auto token = std::make_unique<ExportToken>();
  token->page = py::reinterpret_borrow<py::object>(page);
  token->handle = &h;
  const py::capsule base = export_token(std::move(token));  // before the address is read: a move waits for it
  return export_array(r.dtype, h.shape(), h.bus->host_bytes(r), base);
}

std::span<std::byte> mutable_bytes(py::array& a) {
  return {static_cast<std::byte*>(a.mutable_data()), static_cast<std::size_t>(a.nbytes())};
}


py::dict metadata_dict(const Metadata& md) {
  py::dict d;
  for (const auto& [k, v] : md) {
    d[py::str(k)] = v.is_bytes ? py::object(py::bytes(v.value)) : py::object(py::str(v.value));
  }
  return d;
}

// An edit's copy in device memory, as Python sees it (mmsb._core.DeviceStaging): what `with
// p.edit()` yields for a cuda:N page when CuPy is not there to wrap it. DLPack consumers (CuPy,
// PyTorch) take it in place and writable.
struct StagingHandle {
  std::shared_ptr<DeviceStaging> staging;
  DType dtype;
  std::vector<std::uint64_t> shape;
  DevicePlace place;
};

// `with page.edit() as a:` — a writable staging copy; on a clean exit the difference becomes one
// delta, committed only if the page is still at the epoch the copy was taken at. A page in device
// memory is staged on its device (unless device=False) and diffed there; any other page in a
// NumPy array, diffed on the host.
struct PageEdit {
  py::object page;
  py::object device;  // None: where the page lives; True / False: on its device / on the host
  py::object staged = py::none();
  Epoch epoch = 0;
  bool entered = false;
  std::optional<std::uint64_t> in_transaction;  // bus.rollbacks() at entry inside a transaction
  std::shared_ptr<DeviceStaging> on_device;  // the copy of an edit on the device

  py::object enter() {
    if (entered) fail(ErrorCode::InvalidArgument, "this edit() context is already in use");
    PageHandle& h = page.cast<PageHandle&>();
    const PageRecord& r = h.live();
    h.bus->check_not_read_only();  // now, not after the block's work is done
    in_transaction = h.bus->in_transaction() ? std::optional(h.bus->rollbacks()) : std::nullopt;
    const DevicePlace place = h.bus->device_place(r);
    if (device.is_none() ? place.on_device : to_flag(device, "edit(device=)")) {
      on_device = std::shared_ptr<DeviceStaging>(h.bus->stage_on_device(h.id));
      staged = py::cast(StagingHandle{on_device, r.dtype, h.shape(), place});
      if (!place.emulated) {
        try {
          staged = py::module_::import("cupy").attr("from_dlpack")(staged);
        } catch (py::error_already_set& e) {
          if (!e.matches(PyExc_ImportError)) throw;
        }
      }
    } else {
      py::array a = page_array(h, r, py::handle());
      epoch = h.bus->snapshot(h.id, mutable_bytes(a));
      staged = a;
    }
    entered = true;
    return staged;
  }
  bool exit(py::handle exc_type) {
    if (!entered) return false;
    entered = false;
    const std::shared_ptr<DeviceStaging> copy = std::move(on_device);
    if (!exc_type.is_none()) return false;  // an exception inside the block commits nothing
    PageHandle& h = page.cast<PageHandle&>();
    wait_turn(*h.bus);
    // Its epoch may have come back with other bytes since: the epoch check cannot tell.
    if (in_transaction && h.bus->rollbacks() != *in_transaction) {
      fail(ErrorCode::EpochConflict, "the edit of page ", h.id, " began inside a transaction that was rolled back ",
           "since: its copy holds changes that never committed; re-read the page and edit again");
    }
    if (copy) {
      h.bus->commit_staged(*copy);
      return false;
    }
    const py::array a = py::reinterpret_borrow<py::array>(staged);
    h.bus->update(h.id, {static_cast<const std::byte*>(a.data()), static_cast<std::size_t>(a.nbytes())},
                  epoch);
    return false;
  }
};

}  // namespace

py::array parent_view(const std::shared_ptr<Bus>& bus, PageRecord& r, const std::vector<std::uint64_t>& shape,
                      const std::byte* data) {
  auto token = std::make_unique<ExportToken>();
  token->owned = std::make_unique<PageHandle>(bus, r);
  token->handle = token->owned.get();
  return export_array(r.dtype, shape, data, export_token(std::move(token)));
}

py::object make_page(const std::shared_ptr<Bus>& bus, PageId id) {
  return py::cast(std::make_unique<PageHandle>(bus, id));
}

py::list make_pages(const std::shared_ptr<Bus>& bus, const std::vector<PageId>& ids) {
  py::list out;
  for (PageId id : ids) {
    try {
      out.append(make_page(bus, id));
    } catch (const Error& e) {
      // Deleted by another thread since `ids` was read (each pin waits for the lock, GIL
      // released): it is no longer live, so it is not listed.
      if (e.code() != ErrorCode::PageNotFound) throw;
    }
  }
  return out;
}

PageId page_id_of(py::handle key) {
  if (py::isinstance<PageHandle>(key)) return key.cast<const PageHandle&>().id;
  return to_u64(key, "page id");
}

namespace {
const PageHandle& own_handle(const std::shared_ptr<Bus>& bus, py::handle key) {
  const PageHandle& h = key.cast<const PageHandle&>();
  if (h.bus != bus) fail(ErrorCode::PageNotFound, "page ", h.id, " belongs to another bus");
  return h;
}
}  // namespace

PageId page_id_of(const std::shared_ptr<Bus>& bus, py::handle key) {
  return py::isinstance<PageHandle>(key) ? own_handle(bus, key).id : to_u64(key, "page id");
}

PageId resolve_page(const std::shared_ptr<Bus>& bus, py::handle key) {
  if (py::isinstance<PageHandle>(key)) return bus->page(own_handle(bus, key).id).id;  // open bus, live page
  if (PyUnicode_Check(key.ptr())) {
    // A str UTF-8 cannot hold names no page: names are stored as UTF-8.
    const std::optional<std::string> name = to_text_if_encodable(key, "page name");
    if (PageId id = name ? bus->find_page(*name) : 0) return id;
    fail(ErrorCode::PageNotFound, "no page named ", name ? "'" + *name + "'" : std::string(py::repr(key)));
  }
  if (PyLong_Check(key.ptr()) || (PyIndex_Check(key.ptr()) && !PyFloat_Check(key.ptr()))) {
    return bus->page(to_u64(key, "page id")).id;
  }
  fail(ErrorCode::InvalidArgument, "a page key must be a Page, an int id or a str name; got ",
       Py_TYPE(key.ptr())->tp_name);
}

void bind_page(py::module_& m) {
  py::class_<StagingHandle>(m, "DeviceStaging",
                            "The device copy an edit of a cuda:N page works on (Page.edit): take it with "
                            "DLPack (cupy.from_dlpack, torch.from_dlpack), change it in place; the block's exit "
                            "commits what changed, diffed on the device.")
      .def_property_readonly("page", [](const StagingHandle& s) { return s.staging->page(); })
      .def_property_readonly("epoch", [](const StagingHandle& s) { return s.staging->epoch(); },
                             "The page's epoch the copy was taken at.")
      .def_property_readonly("nbytes", [](const StagingHandle& s) { return s.staging->size(); })
      .def_property_readonly("shape", [](const StagingHandle& s) { return py::tuple(py::cast(s.shape)); })
      .def_property_readonly("dtype", [](const StagingHandle& s) { return numpy_dtype(s.dtype); })
      .def("__dlpack__", [](const StagingHandle& s, py::handle stream, py::handle max_version, py::handle dl_device,
                            py::handle copy) {
        return dlpack_export_staging(s.staging, s.dtype, s.shape, s.place, stream, max_version, dl_device, copy);
      }, py::kw_only(), "stream"_a = py::none(), "max_version"_a = py::none(), "dl_device"_a = py::none(),
         "copy"_a = py::none())
      .def("__dlpack_device__", [](const StagingHandle& s) { return dlpack_device(s.place); })
      // Tests and tools without a device library: bytes in and out of the copy through the device.
      .def("_write", [](const StagingHandle& s, std::uint64_t offset, const py::bytes& data) {
        const std::string_view bytes = data;
        if (offset > s.staging->size() || bytes.size() > s.staging->size() - offset) {
          fail(ErrorCode::InvalidArgument, "write of ", bytes.size(), " bytes at offset ", offset,
               " is outside the ", s.staging->size(), "-byte device copy");
        }
        const cuda::DeviceRun run{s.staging->data() + offset, 0, bytes.size()};
        s.staging->backend().write({&run, 1}, std::as_bytes(std::span(bytes.data(), bytes.size())));
      }, "offset"_a, "data"_a)
      .def("_read", [](const StagingHandle& s) {
        std::string out(s.staging->size(), '\0');
        const cuda::DeviceRun run{s.staging->data(), 0, out.size()};
        s.staging->backend().read({&run, 1}, std::as_writable_bytes(std::span(out.data(), out.size())));
        return py::bytes(out);
      });

  py::class_<PageEdit>(m, "PageEdit", "Context manager returned by Page.edit().")
      .def("__enter__", &PageEdit::enter)
      .def("__exit__", [](PageEdit& e, py::handle t, py::handle, py::handle) { return e.exit(t); });

  py::class_<PageHandle>(m, "Page", py::buffer_protocol(),
                         "A page of a Bus: fixed-size, 64-byte aligned, versioned by epoch.")
      .def_property_readonly("id", [](const PageHandle& h) { return h.id; })
      .def_property_readonly("bus", [](const PageHandle& h) { return h.bus; }, "The Bus this page belongs to.")
      .def_property_readonly("name", [](const PageHandle& h) -> py::object {
        h.live();
        PageInfo info = h.bus->page_info(h.id);
        return info.name.empty() ? py::object(py::none()) : py::object(py::str(info.name));
      })
      .def_property_readonly("stale", [](const PageHandle& h) {
        h.live();  // a deleted page raises, as for its other attributes
        const std::vector<PageId> stale = h.bus->stale_pages();
        return std::find(stale.begin(), stale.end(), h.id) != stale.end();
      }, "True when the page may not match its parents (see Bus.stale_pages).")
      .def_property_readonly("size", [](const PageHandle& h) { return h.live().size; })
      .def_property_readonly("nbytes", [](const PageHandle& h) { return h.live().size; })
      .def_property_readonly("epoch", [](const PageHandle& h) {
        const PageRecord& r = h.live();
        return h.bus->read_settled([&] { return r.epoch.load(std::memory_order_relaxed); });
      })
      .def_property_readonly("last_lsn", [](const PageHandle& h) {
        const PageRecord& r = h.live();
        return h.bus->read_settled([&] { return r.last_lsn.load(std::memory_order_relaxed); });
      })
      .def_property_readonly("dtype", [](const PageHandle& h) -> py::object {
        const DType t = h.live().dtype;
        return t == DType::Raw ? py::object(py::none()) : py::object(numpy_dtype(t));
      })
      .def_property_readonly("shape", [](const PageHandle& h) -> py::object {
        if (h.live().dtype == DType::Raw) return py::none();
        return py::tuple(py::cast(h.shape()));
      })
      .def_property_readonly("location", [](const PageHandle& h) {
        h.live();
        return h.bus->page_info(h.id).location;
      })
      .def_property_readonly("metadata", [](const PageHandle& h) {
        h.live();
        return metadata_dict(h.bus->page_info(h.id).metadata);
      }, "A copy of the page's metadata (str -> str/bytes); change it with set_metadata().")
      .def("to", [](py::object self, py::handle location) {
        const PageHandle& h = self.cast<const PageHandle&>();
        h.live();
        h.bus->move_page(h.id, to_text(location, "location"));
        return self;
      }, "location"_a,
         "Move the page to `location` ('cpu', 'cuda:N', 'unified'): same bytes and epoch, a logged "
         "change (lsn + 1) unless it is already there. Returns the page. Refused (InvalidArgumentError) "
         "inside a transaction and while views, memoryviews or DLPack tensors of its bytes are alive.")
      .def("set_metadata", [](const PageHandle& h, py::handle key_obj, py::handle value) {
        h.live();
        const std::string key = to_text(key_obj, "metadata key");
        std::optional<MetaValue> v;
        if (!value.is_none()) v = to_meta_value(key, value);
        h.bus->set_metadata(h.id, key, v);
      }, "key"_a, "value"_a, "Set one metadata entry (a committed change, lsn + 1); None removes it.")
      .def("view", [](py::object self) {
        const PageHandle& h = self.cast<const PageHandle&>();
        return page_array(h, h.live(), self);
      }, "Read-only NumPy array sharing the page's memory (live: shows later commits). A device "
         "page's view shares its host mirror, refreshed by each view() call.")
      .def("__array__", [](py::object self, py::handle dtype, py::handle copy) {
        // Without __array__, NumPy swallows the buffer error of a deleted page or closed bus and
        // silently builds a 0-d object array.
        const PageHandle& h = self.cast<const PageHandle&>();
        py::array v = page_array(h, h.live(), self);
        py::dtype want;
        if (!dtype.is_none()) {
          try {
            want = py::dtype::from_args(py::reinterpret_borrow<py::object>(dtype));
          } catch (py::error_already_set& e) {
            fail(ErrorCode::InvalidArgument, "dtype ", std::string(py::repr(dtype)), " is no NumPy dtype: ", user_error_message(e));
          }
        }
        if (!dtype.is_none() && !v.dtype().equal(want)) {
          if (!copy.is_none() && !to_flag(copy, "copy")) {
            fail(ErrorCode::InvalidArgument, "converting page ", h.id, " to ", std::string(py::str(dtype)),
                 " needs a copy, but copy=False was asked");
          }
          return py::array(v.attr("astype")(dtype));
        }
        if (!copy.is_none() && to_flag(copy, "copy")) return py::array(v.attr("copy")());
        return v;
      }, "dtype"_a = py::none(), py::kw_only(), "copy"_a = py::none())
      .def("read", [](const PageHandle& h, py::handle offset, py::handle length) {
        const PageRecord& r = h.live();
        const std::uint64_t off = to_u64(offset, "offset");
        const std::uint64_t len = to_u64(length, "length");
        if (off > r.size || len > r.size - off) {
          fail(ErrorCode::InvalidArgument, "read of ", len, " bytes at offset ", off,
               " is outside page ", h.id, " (", r.size, " bytes)");
        }
        py::bytes out(nullptr, static_cast<py::ssize_t>(len));
        h.bus->read(h.id, off, {reinterpret_cast<std::byte*>(PyBytes_AS_STRING(out.ptr())), len});
        return out;
      }, "offset"_a, "length"_a, "Copy of bytes [offset, offset + length).")
      .def("snapshot", [](const PageHandle& h) {
        py::array a = page_array(h, h.live(), py::handle());
        const Epoch e = h.bus->snapshot(h.id, mutable_bytes(a));
        return py::make_tuple(a, e);
      }, "(copy of the content, its epoch), taken atomically.")
      .def("write", [](const PageHandle& h, py::handle offset, py::handle data, py::handle expect) {
        h.live();
        const std::uint64_t off = to_u64(offset, "offset");
        const std::optional<Epoch> want = to_epoch(expect);
        ByteBuffer buf(data, "data");
        return h.bus->write(h.id, off, buf.bytes(), want);
      }, "offset"_a, "data"_a, "expect_epoch"_a = py::none(),
         "Commit one delta writing `data` at byte `offset`; returns the new epoch.")
      .def("update", [](const PageHandle& h, py::handle array, py::handle expect) {
        const PageRecord& r = h.live();
        const std::optional<Epoch> want = to_epoch(expect);
        ByteBuffer buf(array, "new content", r.dtype != DType::Raw);
        if (r.dtype != DType::Raw) {
          const DType got = buf.dtype();
          if (got != r.dtype) {
            fail(ErrorCode::InvalidArgument, "page ", h.id, " holds ", dtype_name(r.dtype),
                 " but the new content is ", dtype_name(got), "; convert with .astype()");
          }
          if (buf.shape() != h.shape()) {
            fail(ErrorCode::InvalidArgument, "new content has shape ",
                 std::string(py::str(py::tuple(py::cast(buf.shape())))), " but page ", h.id,
                 " has shape ", std::string(py::str(py::tuple(py::cast(h.shape())))));
          }
        }
        return h.bus->update(h.id, buf.bytes(), want);
      }, "new"_a, "expect_epoch"_a = py::none(),
         "Replace the whole content, committing only the changed bytes; False if nothing changed.")
      .def("edit", [](py::object self, py::object device) {
        self.cast<const PageHandle&>().live();
        return PageEdit{self, std::move(device)};
      }, "device"_a = py::none(),
         "Context manager yielding a writable copy; its changes commit as one delta on exit. A cuda:N page "
         "is copied and diffed on its device (a CuPy array, or a DLPack-capable DeviceStaging without "
         "CuPy) unless device=False; other pages yield a NumPy array.")
      .def("__dlpack__", [](const PageHandle& h, py::handle stream, py::handle max_version,
                            py::handle dl_device, py::handle copy) {
        return dlpack_export(h, stream, max_version, dl_device, copy);
      }, py::kw_only(), "stream"_a = py::none(), "max_version"_a = py::none(),
         "dl_device"_a = py::none(), "copy"_a = py::none())
      .def("__dlpack_device__", [](const PageHandle& h) { return dlpack_device(h); })
      .def_buffer([](PageHandle& h) {
        // Served by a view array, whose export ends when the consumer releases the buffer. The
        // cast finds the Page object being asked (pybind11 keeps one per handle).
        py::object self = py::cast(&h, py::return_value_policy::reference);
        py::array view = page_array(h, h.live(), self);
        auto buffer = std::make_unique<Py_buffer>();
        if (PyObject_GetBuffer(view.ptr(), buffer.get(), PyBUF_RECORDS_RO) != 0) throw py::error_already_set();
        return py::buffer_info(buffer.release(), true);
      })
      .def("__eq__", [](const PageHandle& a, py::handle b) {
        if (!py::isinstance<PageHandle>(b)) return false;
        const PageHandle& o = b.cast<const PageHandle&>();
        return a.bus == o.bus && a.id == o.id;
      })
      .def("__hash__", [](const PageHandle& h) {
        return static_cast<py::ssize_t>(std::hash<const void*>{}(h.bus.get()) ^ (h.id * 0x9E3779B97F4A7C15ull));
      })
      .def("__repr__", [](const PageHandle& h) {
        wait_turn(*h.bus);
        if (h.rec->deleted()) return "<mmsb.Page " + std::to_string(h.id) + " (deleted)>";
        if (h.bus->closed()) return "<mmsb.Page " + std::to_string(h.id) + " (bus closed)>";
        const PageRecord& r = *h.rec;
        PageInfo info = h.bus->page_info(h.id);
        std::string s = "<mmsb.Page " + std::to_string(h.id);
        if (!info.name.empty()) s += " " + std::string(py::repr(py::str(info.name)));  // quoted: one line, whatever it holds
        if (r.dtype == DType::Raw) {
          s += " raw " + std::to_string(r.size) + " B";
        } else {
          s += " " + std::string(dtype_name(r.dtype)) + std::string(py::str(py::tuple(py::cast(h.shape()))));
        }
        s += " epoch=" + std::to_string(r.epoch.load()) + ">";
        return s;
      });
}

}  // namespace mmsb::py_bind
