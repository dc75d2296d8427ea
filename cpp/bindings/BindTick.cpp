// Bus ingest queue, tick, GC, page aging and latency histograms, seen from Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "BindDelta.hpp"
#include "Bindings.hpp"
#include "mmsb/core/Error.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace mmsb::py_bind {
namespace {

py::dict gc_dict(const GcReport& g) {
  py::dict d;
  d["bytes_freed"] = g.bytes_freed;
  d["pause_ns"] = g.pause_ns;
  d["arena_bytes_released"] = g.arena_bytes_released;
  d["record_bytes_freed"] = g.record_bytes_freed;
  d["cache_bytes_freed"] = g.cache_bytes_freed;
  d["index_bytes_freed"] = g.index_bytes_freed;
  d["log_files_removed"] = g.log_files_removed;
  d["log_bytes_freed"] = g.log_bytes_freed;
  return d;
}

py::dict tick_dict(const TickReport& r) {
  py::dict d;
  d["tick"] = r.tick;
  d["first_lsn"] = r.first_lsn;
  d["last_lsn"] = r.last_lsn;
  d["submissions"] = r.submissions;
  d["deltas_applied"] = r.deltas_applied;
  d["bytes_applied"] = r.bytes_applied;
  d["rejected"] = r.rejected;
  d["rejections"] = r.rejections;
  d["recomputes"] = r.recomputes;
  d["derived_deltas"] = r.derived_deltas;
  d["validated"] = r.validated;
  d["validation_failures"] = r.validation_failures;
  d["gc_ran"] = r.gc_ran;
  d["gc"] = r.gc_ran ? py::object(gc_dict(r.gc)) : py::object(py::none());
  py::dict phases;
  for (int p = 0; p < kTickPhaseCount; ++p) phases[py::str(std::string(tick_phase_name(static_cast<TickPhase>(p))))] = r.phase_ns[p];
  d["phase_ns"] = phases;
  d["total_ns"] = r.total_ns;
  d["overruns"] = r.overruns;
  d["queue_depth"] = r.queue_depth;
  d["replicated_rows"] = r.replicated_rows;
  d["replication_error"] = r.replication_error.empty() ? py::object(py::none()) : py::object(py::str(r.replication_error));
  return d;
}

// Budgets are given in seconds (floats) from Python, like time.perf_counter() differences.
std::uint64_t budget_ns(py::handle seconds, const char* name) {
  if (seconds.is_none()) return 0;
  const double s = to_real(seconds, (std::string("tick budget ") + name).c_str());
  if (!(s > 0) || s > 1e6) {
    fail(ErrorCode::InvalidArgument, "tick budget ", name, " must be > 0 and at most 1e6 seconds (or None), got ", s);
  }
  // At least 1 ns: a positive budget below it must not turn into 0, which means no budget.
  return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(s * 1e9));
}

py::object seconds(std::uint64_t ns) { return ns == 0 ? py::object(py::none()) : py::object(py::float_(ns / 1e9)); }

py::list buckets(const LatencyHistogram& h) {
  py::list out;
  for (const auto& b : h.buckets()) out.append(py::make_tuple(b.lower_ns, b.upper_ns, b.count));
  return out;
}

const LatencyHistogram& histogram(const Bus& bus, const std::string& kind) {
  if (kind == "commit") return bus.commit_latency();
  if (kind == "tick") return bus.tick_latency();
  fail(ErrorCode::InvalidArgument, "unknown latency histogram '", kind, "'; expected 'commit' or 'tick'");
}

bool on_main_thread() {
  static const unsigned long main = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  return PyThread_get_thread_ident() == main;
}

}  // namespace

void bind_tick(py::module_& m) {
  py::class_<Bus, std::shared_ptr<Bus>> bus = py::reinterpret_borrow<py::class_<Bus, std::shared_ptr<Bus>>>(m.attr("Bus"));
  bus.def("submit", [](const std::shared_ptr<Bus>& b, py::handle item, py::handle block_arg) {
        const bool block = to_flag(block_arg, "block");
        const bool batch = py::isinstance<PyDeltaBatch>(item);
        const PyDelta* delta = batch ? nullptr : &delta_for(*b, item, "submit");
        // Copied into the ring before it returns, and each try copies afresh.
        const auto submit = [&](bool wait) {
          if (batch) {
            b->submit(item.cast<const PyDeltaBatch&>().view(), wait);
          } else {
            b->submit(Delta(*delta), wait);
          }
        };
        if (!block || !on_main_thread()) return submit(block);
        // The main thread waits in short sleeps instead of one uninterruptible futex wait, so
        // that Ctrl-C reaches a program blocked on a full ring (signals run on the main thread).
        for (auto pause = std::chrono::microseconds(50);; pause = std::min(pause * 2, std::chrono::microseconds(5000))) {
          try {
            return submit(false);
          } catch (const Error& e) {
            if (e.code() != ErrorCode::QueueFull) throw;
          }
          {
            py::gil_scoped_release release;
            std::this_thread::sleep_for(pause);
          }
          if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        }
      }, "item"_a, "block"_a = true,
      "Queue a Delta or DeltaBatch for the next tick() from any thread (lock-free; the bytes are "
      "copied). A full queue blocks (GIL released; Ctrl-C interrupts it on the main thread) or, "
      "with block=False, raises QueueFullError. "
      "Pages and bounds are checked by tick(), which reports invalid submissions instead of "
      "applying them.")
      .def("_tick", [](Bus& b) {
        wait_turn(b);
        TickReport r;
        {
          py::gil_scoped_release release;  // recomputes written in Python take the GIL back
          r = b.tick();
        }
        return tick_dict(r);
      })
      .def("_gc", [](Bus& b) {
        wait_turn(b);
        GcReport g;
        {
          py::gil_scoped_release release;
          g = b.gc();
        }
        return gc_dict(g);
      })
      .def("configure_tick", [](Bus& b, py::handle drain, py::handle apply, py::handle propagate, py::handle validate,
                                py::handle gc, py::handle total, py::handle validate_sample, py::handle memory_budget) {
        TickOptions o = b.tick_options();
        // Only the arguments given change; pass 0 for a budget to remove it.
        auto set = [](std::uint64_t& field, py::handle v, const char* name) {
          if (v.is(py::ellipsis())) return;
          field = !v.is_none() && to_real(v, (std::string("tick budget ") + name).c_str()) == 0 ? 0 : budget_ns(v, name);
        };
        TickOptions n = o;
        set(n.drain_budget_ns, drain, "drain");
        set(n.apply_budget_ns, apply, "apply");
        set(n.propagate_budget_ns, propagate, "propagate");
        set(n.validate_budget_ns, validate, "validate");
        set(n.gc_budget_ns, gc, "gc");
        set(n.total_budget_ns, total, "total");
        if (!validate_sample.is(py::ellipsis())) {
          const std::uint64_t k = validate_sample.is_none() ? 0 : to_u64(validate_sample, "validate_sample");
          if (k > 1'000'000'000) fail(ErrorCode::InvalidArgument, "validate_sample must be at most 10**9, got ", k);
          n.validate_sample = static_cast<unsigned>(k);
        }
        if (!memory_budget.is(py::ellipsis())) {
          n.memory_budget_bytes = memory_budget.is_none() ? 0 : to_u64(memory_budget, "memory_budget");
        }
        b.set_tick_options(n);
      }, py::kw_only(), "drain"_a = py::ellipsis(), "apply"_a = py::ellipsis(), "propagate"_a = py::ellipsis(),
      "validate"_a = py::ellipsis(), "gc"_a = py::ellipsis(), "total"_a = py::ellipsis(),
      "validate_sample"_a = py::ellipsis(), "memory_budget"_a = py::ellipsis(),
      "Set tick() budgets in seconds per phase (drain, apply, propagate, validate, gc, total; None "
      "or 0 removes one), validate_sample (derived pages re-derived and compared per tick) and "
      "memory_budget (bytes: gc() runs at the end of a tick above it; None = never). Arguments not "
      "given keep their value. A phase over budget is reported, never cut short.")
      .def("tick_options", [](Bus& b) {
        const TickOptions o = b.tick_options();
        py::dict d;
        d["drain"] = seconds(o.drain_budget_ns);
        d["apply"] = seconds(o.apply_budget_ns);
        d["propagate"] = seconds(o.propagate_budget_ns);
        d["validate"] = seconds(o.validate_budget_ns);
        d["gc"] = seconds(o.gc_budget_ns);
        d["total"] = seconds(o.total_budget_ns);
        d["validate_sample"] = o.validate_sample;
        d["memory_budget"] = o.memory_budget_bytes == 0 ? py::object(py::none()) : py::int_(o.memory_budget_bytes);
        return d;
      }, "The tick() settings (budgets in seconds, None = none).")
      .def_property_readonly("queue_depth", &Bus::queue_depth, "Submissions waiting for a tick.")
      .def_property_readonly("queue_capacity", &Bus::queue_capacity, "Submissions the ingest ring holds.")
      .def("_page_ages", [](Bus& b) {
        wait_turn(b);
        PageAges a = b.page_ages();
        py::array_t<std::uint64_t> ids(static_cast<py::ssize_t>(a.ids.size()));
        py::array_t<std::uint64_t> lsns(static_cast<py::ssize_t>(a.last_lsn.size()));
        std::copy(a.ids.begin(), a.ids.end(), ids.mutable_data());
        std::copy(a.last_lsn.begin(), a.last_lsn.end(), lsns.mutable_data());
        return py::make_tuple(ids, lsns, b.lsn());
      })
      .def("_latency", [](const Bus& b, const std::string& kind) {
        const LatencyHistogram& h = histogram(b, kind);
        py::dict d;
        d["count"] = h.count();
        d["sum_ns"] = h.sum_ns();
        d["max_ns"] = h.max_ns();
        d["p50_ns"] = h.quantile_ns(0.5);
        d["p90_ns"] = h.quantile_ns(0.9);
        d["p99_ns"] = h.quantile_ns(0.99);
        d["p999_ns"] = h.quantile_ns(0.999);
        d["buckets"] = buckets(h);
        return d;
      }, "kind"_a);
}

}  // namespace mmsb::py_bind
