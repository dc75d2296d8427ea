// The graph side of mmsb.Bus: depend / edges / propagation / provenance, Python recomputes, and
// the probes the purity validator uses.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "Bindings.hpp"
#include "Convert.hpp"
#include "ErrorTranslator.hpp"
#include "mmsb/graph/Semiring.hpp"

namespace mmsb::py_bind {
namespace py = pybind11;
using namespace pybind11::literals;

void bind_events(py::class_<Bus, std::shared_ptr<Bus>>& cls);

namespace {

// Set while the purity validator probes a callable: parents are then handed over as writable
// copies and compared afterwards, so a callable that writes its inputs is caught, not refused.
thread_local bool g_purity_probe = false;

py::tuple edge_tuple(const Edge& e) { return py::make_tuple(e.parent, e.child, std::string(edge_kind_name(e.kind))); }

py::list edge_list(const std::vector<Edge>& edges) {
  py::list out;
  for (const Edge& e : edges) out.append(edge_tuple(e));
  return out;
}

// The steps as (key, lsn, source, timestamp_ns, inputs) with key = (page, epoch) and inputs a
// tuple of keys. A deep fan-in answer names each node as an input of many others (2k nodes, 47k
// inputs), so every distinct key is one shared tuple: building a tuple per input was most of the
// answer's time.
py::list provenance_steps(const std::vector<ProvenanceStep>& steps) {
  struct KeyHash {
    std::size_t operator()(const std::pair<PageId, Epoch>& k) const noexcept {
      return std::hash<std::uint64_t>{}(k.first * 0x9E3779B97F4A7C15ull ^ k.second);
    }
  };
  std::unordered_map<std::pair<PageId, Epoch>, py::tuple, KeyHash> keys;
  keys.reserve(steps.size() * 2);
  auto key = [&](PageId page, Epoch epoch) -> const py::tuple& {
    auto [it, fresh] = keys.try_emplace({page, epoch});
    if (fresh) it->second = py::make_tuple(page, epoch);
    return it->second;
  };
  std::unordered_map<Source, py::str> sources;
  py::list out(steps.size());
  for (std::size_t n = 0; n < steps.size(); ++n) {
    const ProvenanceStep& s = steps[n];
    py::tuple inputs(s.inputs.size());
    for (std::size_t i = 0; i < s.inputs.size(); ++i) inputs[i] = key(s.inputs[i].first, s.inputs[i].second);
    auto [src, fresh] = sources.try_emplace(s.source);
    if (fresh) src->second = py::str(std::string(source_name(s.source)));
    out[n] = py::make_tuple(key(s.page, s.epoch), s.lsn, src->second, s.timestamp_ns, std::move(inputs));
  }
  return out;
}

// A Python function fn(out, *parents) as an engine recompute. It holds the bus weakly (the bus
// owns it) and hands fn read-only views of the parents' bytes, pinned without the bus lock, and a
// writable copy of the child's, copied back after the call.
RecomputeCallable wrap_callable(const std::shared_ptr<Bus>& bus, py::function fn, PageId child,
                                std::span<const PageId> parents) {
  // Layouts are read now: inside a wave the bus lock is held and page_info() may not be called.
  auto shape_of = [&](PageId id) {
    PageInfo info = bus->page_info(id);
    return info.shape.empty() ? std::vector<std::uint64_t>{bus->page(id).size} : info.shape;
  };
  struct State {
    std::weak_ptr<Bus> bus;
    py::function fn;
    PageId child;
    py::dtype dtype;
    std::vector<py::ssize_t> shape;
    std::unordered_map<PageId, std::vector<std::uint64_t>> parent_shapes;
    // The child's array of the last call if fn kept no reference to it: the next call fills it
    // again instead of allocating one.
    py::object spare;
    ~State() {
      py::gil_scoped_acquire gil;
      fn = py::function();
      dtype = py::dtype();
      spare = py::object();
    }
  };
  auto st = std::make_shared<State>();
  st->bus = bus;
  st->fn = std::move(fn);
  st->child = child;
  st->dtype = numpy_dtype(bus->page(child).dtype);
  for (std::uint64_t d : shape_of(child)) st->shape.push_back(static_cast<py::ssize_t>(d));
  for (PageId p : parents) st->parent_shapes.emplace(p, shape_of(p));
  return [st](std::span<std::byte> out, std::span<const PageRecord* const> parents,
              std::span<const std::byte* const> inputs) {
    py::gil_scoped_acquire gil;
    std::shared_ptr<Bus> b = st->bus.lock();
    if (!b) fail(ErrorCode::Closed, "the bus of page ", st->child, " is gone");
    try {
      py::array staged = st->spare ? py::reinterpret_steal<py::array>(st->spare.release())
                                   : py::array(st->dtype, st->shape);
      if (static_cast<std::size_t>(staged.nbytes()) != out.size()) {
        fail(ErrorCode::Propagation, "page ", st->child, " no longer has the layout its recompute was registered with");
      }
      std::memcpy(staged.mutable_data(), out.data(), out.size());
      py::tuple args(1 + parents.size());
      args[0] = staged;
      std::vector<py::array> copies;
      for (std::size_t k = 0; k < parents.size(); ++k) {
        PageRecord& p = const_cast<PageRecord&>(*parents[k]);
        const auto shape = st->parent_shapes.find(p.id);
        py::array view = parent_view(
            b, p, shape != st->parent_shapes.end() ? shape->second : std::vector<std::uint64_t>{p.size}, inputs[k]);
        if (g_purity_probe) {
          copies.push_back(py::array(view.attr("copy")()));
          view = copies.back();
        }
        args[1 + k] = std::move(view);
      }
      {
        const auto result = py::reinterpret_steal<py::object>(PyObject_Call(st->fn.ptr(), args.ptr(), nullptr));
        if (!result) throw py::error_already_set();
        if (!result.is_none()) staged.attr("__setitem__")(py::ellipsis(), result);
      }
      for (std::size_t k = 0; k < copies.size(); ++k) {
        if (std::memcmp(copies[k].data(), inputs[k], parents[k]->size) != 0) {
          fail(ErrorCode::Propagation, "the recompute of page ", st->child, " modified its input ", k,
               " (page ", parents[k]->id, "); recomputes must not write their parents");
        }
      }
      // The callable may have changed `out` in place (ndarray.resize with refcheck=False, or a
      // new shape or dtype): its bytes, all of them, are still the child's, but only an array
      // as it was handed out is handed out again.
      const bool contiguous = (staged.flags() & py::array::c_style) != 0;
      if (static_cast<std::size_t>(staged.nbytes()) != out.size() || !contiguous) {
        fail(ErrorCode::Propagation, "the recompute of page ", st->child, " resized its out array (to ",
             staged.nbytes(), contiguous ? " bytes" : " bytes, not contiguous", "; the page has ", out.size(),
             "); write into out, or return the new content");
      }
      std::memcpy(out.data(), staged.data(), out.size());
      args = py::tuple(0);
      if (Py_REFCNT(staged.ptr()) == 1 && staged.writeable() && staged.dtype().equal(st->dtype) &&
          std::equal(st->shape.begin(), st->shape.end(), staged.shape(), staged.shape() + staged.ndim())) {
        st->spare = std::move(staged);
      }
    } catch (py::error_already_set& e) {
      throw std::runtime_error(user_error_message(e));  // the engine names the page and function
    }
  };
}

}  // namespace

std::vector<PageId> page_list(const std::shared_ptr<Bus>& bus, py::handle seq, const char* what) {
  std::vector<PageId> out;
  // One key: a str is a name, not one-letter names; a byte string is a key of the wrong type
  // (refused as such), not page ids one per byte.
  if (py::isinstance<py::str>(seq) || PyBytes_Check(seq.ptr()) || PyByteArray_Check(seq.ptr()) ||
      PyMemoryView_Check(seq.ptr()) || !PySequence_Check(seq.ptr())) {
    out.push_back(resolve_page(bus, seq));
    return out;
  }
  for (py::handle h : py::reinterpret_borrow<py::sequence>(seq)) out.push_back(resolve_page(bus, h));
  if (out.empty()) fail(ErrorCode::InvalidArgument, what, " must name at least one page");
  return out;
}


void bind_graph(py::module_& m) {
  auto cls = py::reinterpret_borrow<py::class_<Bus, std::shared_ptr<Bus>>>(m.attr("Bus"));
  cls.def("_depend", [](const std::shared_ptr<Bus>& bus, py::handle child_key, py::handle on, const std::string& kind,
                        const std::string& semiring, py::handle weights, py::handle fn, const std::string& name) {
       wait_turn(*bus);
       const PageId child = resolve_page(bus, child_key);
       const std::vector<PageId> parents = page_list(bus, on, "on");
       RecomputeSpec spec;
       RecomputeCallable callable;
       if (kind == "copy") {
         spec.kind = RecomputeKind::Copy;
       } else if (kind == "reduce") {
         spec.kind = RecomputeKind::Reduce;
         spec.semiring = parse_semiring(semiring);
       } else {
         spec.kind = RecomputeKind::Callable;
         spec.name = name;
         callable = wrap_callable(bus, fn.cast<py::function>(), child, parents);
       }
       std::vector<double> w;
       if (!weights.is_none()) {
         if (!py::isinstance<py::iterable>(weights) || PyUnicode_Check(weights.ptr())) {
           fail(ErrorCode::InvalidArgument, "weights must be a sequence of numbers, one per parent; got ",
                Py_TYPE(weights.ptr())->tp_name);
         }
         for (py::handle x : py::reinterpret_borrow<py::iterable>(weights)) {
           // True / False are the weights of the boolean semirings.
           w.push_back(PyBool_Check(x.ptr()) ? (x.ptr() == Py_True ? 1.0 : 0.0) : to_real(x, "a weight"));
         }
       }
       bus->depend(child, parents, spec, w, std::move(callable));
     })
      .def("add_edge", [](const std::shared_ptr<Bus>& bus, py::handle parent, py::handle child, py::handle kind) {
        wait_turn(*bus);
        bus->add_edge(resolve_page(bus, parent), resolve_page(bus, child), parse_edge_kind(to_text(kind, "kind")));
      }, "parent"_a, "child"_a, "kind"_a = "control",
         "Adds a 'control' (child only invalidated) or 'device_sync' (child kept a copy) edge; "
         "data edges come from depend(). GraphCycleError if it would close a cycle.")
      .def("remove_edge", [](const std::shared_ptr<Bus>& bus, py::handle parent, py::handle child) {
        wait_turn(*bus);
        bus->remove_edge(resolve_page(bus, parent), resolve_page(bus, child));
      }, "parent"_a, "child"_a, "Removes the edge parent -> child (GraphError if none).")
      .def("_in_edges", [](const std::shared_ptr<Bus>& bus, py::handle p) {
        wait_turn(*bus);
        return edge_list(bus->in_edges(resolve_page(bus, p)));
      })
      .def("_out_edges", [](const std::shared_ptr<Bus>& bus, py::handle p) {
        wait_turn(*bus);
        return edge_list(bus->out_edges(resolve_page(bus, p)));
      })
      .def("_topological_order", [](Bus& bus) {
        wait_turn(bus);
        return bus.topological_order();
      })
      .def("_validate_graph", [](Bus& bus) {
        wait_turn(bus);
        const GraphReport r = bus.validate_graph();
        py::dict d;
        d["ok"] = r.ok;
        d["nodes"] = r.nodes;
        d["edges"] = r.edges;
        d["cycles"] = r.cycles;
        d["dangling"] = edge_list(r.dangling);
        d["order"] = r.order;
        return d;
      })
      .def("_derivation", [](const std::shared_ptr<Bus>& bus, py::handle p) -> py::object {
        wait_turn(*bus);
        const auto d = bus->derivation(resolve_page(bus, p));
        if (!d) return py::none();
        py::dict out;
        out["fn"] = describe(d->fn);
        out["parents"] = d->parents;
        out["weights"] = d->weights.empty() ? py::object(py::none()) : py::cast(d->weights);
        out["memo"] = d->memo;
        out["missing_callable"] = d->missing_callable();
        return out;
      })
      .def_property("propagation",
                    [](const Bus& bus) { return bus.propagation() == PropagationMode::Eager ? "eager" : "deferred"; },
                    [](Bus& bus, py::handle mode_obj) {
                      const std::string mode = to_text(mode_obj, "propagation");
                      if (mode != "eager" && mode != "deferred") {
                        fail(ErrorCode::InvalidArgument, "propagation must be 'eager' or 'deferred'; got '", mode, "'");
                      }
                      wait_turn(bus);
                      bus.set_propagation(mode == "eager" ? PropagationMode::Eager : PropagationMode::Deferred);
                    },
                    "'eager': each commit runs its wave; 'deferred': commits mark pages stale and "
                    "propagate() (or tick()) runs the wave.")
      .def("propagate", [](Bus& bus) {
        wait_turn(bus);
        return bus.propagate();
      }, "Runs one wave over every stale page; returns how many pages changed.")
      .def("stale_pages", [](const std::shared_ptr<Bus>& bus) {
        wait_turn(*bus);
        return make_pages(bus, bus->stale_pages());
      }, "Pages that may not match their parents (deferred commits, control edges, missing callables).")
      .def("_stale_ids", [](Bus& bus) {
        wait_turn(bus);
        return bus.stale_pages();
      })
      .def("_provenance", [](const std::shared_ptr<Bus>& bus, py::handle p, py::handle epoch, unsigned max_depth) {
        wait_turn(*bus);
        // An int id also reaches deleted pages: their history stays.
        const PageId id = PyLong_Check(p.ptr()) ? to_u64(p, "page id") : resolve_page(bus, p);
        std::optional<Epoch> e;
        if (!epoch.is_none()) e = to_u64(epoch, "epoch");
        return provenance_steps(bus->provenance(id, e, max_depth));
      })
      .def("_preview_recompute", [](const std::shared_ptr<Bus>& bus, py::handle p, bool probe) {
        wait_turn(*bus);
        const PageId id = resolve_page(bus, p);
        const std::uint64_t size = bus->page(id).size;
        std::vector<std::byte> buf(size);
        struct Probe {
          explicit Probe(bool on) { g_purity_probe = on; }
          ~Probe() { g_purity_probe = false; }
        } scope(probe);
        bus->preview_recompute(id, buf);
        return py::bytes(reinterpret_cast<const char*>(buf.data()), buf.size());
      });
  bind_events(cls);

  m.def("_semiring_laws", [](const std::string& semiring, const std::string& dtype, std::uint64_t samples,
                             std::uint64_t seed) {
    const SemiringLawReport r = check_semiring_laws(parse_semiring(semiring), parse_dtype(dtype), samples, seed);
    return py::make_tuple(r.checks, r.violations);
  });
  m.def("_semiring_supports", [](const std::string& semiring, const std::string& dtype) {
    return semiring_supports(parse_semiring(semiring), parse_dtype(dtype));
  });
}

}  // namespace mmsb::py_bind
