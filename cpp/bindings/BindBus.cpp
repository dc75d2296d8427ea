// mmsb.Bus: page lookup, explicit deltas and batches, history, bus lifetime. create_page's
// argument handling is in CreatePage.cpp.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "BindDelta.hpp"
#include "Bindings.hpp"
#include "Convert.hpp"
#include "ErrorTranslator.hpp"
#include "mmsb/core/Error.hpp"

namespace mmsb::py_bind {
namespace py = pybind11;
using namespace pybind11::literals;

namespace {

py::dict stats_dict(const BusStats& s) {
  py::dict d;
  d["deltas_applied"] = s.deltas_applied;
  d["bytes_applied"] = s.bytes_applied;
  d["commits"] = s.commits;
  d["pages_created"] = s.pages_created;
  d["pages_deleted"] = s.pages_deleted;
  d["waves"] = s.waves;
  d["recomputes"] = s.recomputes;
  d["memo_skips"] = s.memo_skips;
  d["cutoffs"] = s.cutoffs;
  d["derived_deltas"] = s.derived_deltas;
  d["events"] = s.events;
  d["submits"] = s.submits;
  d["submits_rejected"] = s.submits_rejected;
  d["submits_discarded"] = s.submits_discarded;
  d["ticks"] = s.ticks;
  d["tick_overruns"] = s.tick_overruns;
  d["validation_failures"] = s.validation_failures;
  d["gc_runs"] = s.gc_runs;
  d["gc_bytes_freed"] = s.gc_bytes_freed;
  d["queue_depth"] = s.queue_depth;
  d["queue_high_water"] = s.queue_high_water;
  return d;
}

py::dict memory_dict(const MemoryReport& r) {
  py::dict d;
  d["pages"] = r.pages;
  d["data_bytes"] = r.data_bytes;
  d["arena_slack_bytes"] = r.arena_slack_bytes;
  d["metadata_bytes"] = r.metadata_bytes;
  d["graph_bytes"] = r.graph_bytes;
  d["index_bytes"] = r.index_bytes;
  d["cache_bytes"] = r.cache_bytes;
  d["log_bytes"] = r.log_bytes;
  d["queue_bytes"] = r.queue_bytes;
  d["mirror_bytes"] = r.mirror_bytes;
  d["device_bytes"] = r.device_bytes;
  d["page_metadata_bytes"] = r.record_bytes_per_page;
  d["total_bytes"] = r.total_bytes();
  return d;
}

bool contains(const std::shared_ptr<Bus>& bus, py::handle key) {
  wait_turn(*bus);
  if (py::isinstance<PageHandle>(key)) {
    const PageHandle& h = key.cast<const PageHandle&>();
    if (h.bus != bus) return false;
  } else if (!PyUnicode_Check(key.ptr()) &&
             (PyBool_Check(key.ptr()) || PyFloat_Check(key.ptr()) || !PyIndex_Check(key.ptr()))) {
    return false;
  }
  try {
    resolve_page(bus, key);
    return true;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::PageNotFound || e.code() == ErrorCode::InvalidArgument) return false;
    throw;  // a closed bus answers ClosedError, not False
  }
}

// progress=: None shows bars only where someone watches (mmsb._progress decides), False shows
// none, True always, a callable(phase, done, total) is called instead. The returned object keeps
// the Python callable alive for the call; the ProgressFn only borrows it, so the engine may copy
// the function without the GIL.
struct Progress {
  py::object callable;  // None: no progress
  ProgressFn fn() const {
    if (callable.is_none()) return {};
    return [f = callable.ptr()](std::string_view phase, std::uint64_t done, std::uint64_t total) {
      py::gil_scoped_acquire gil;
      py::handle{f}(py::str(phase.data(), phase.size()), done, total);  // raising abandons the work
    };
  }
};

void check_progress(py::handle progress) {
  if (progress.is_none() || py::isinstance<py::bool_>(progress) || PyCallable_Check(progress.ptr())) return;
  fail(ErrorCode::InvalidArgument, "progress must be None, True, False or a callable(phase, done, total); got ",
       std::string(py::str(py::type::of(progress).attr("__name__"))));
}

Progress progress_for(py::handle progress, const char* what) {
  check_progress(progress);
  if (progress.is_none() || py::isinstance<py::bool_>(progress)) {
    return {py::module_::import("mmsb._progress").attr("reporter")(progress, what)};
  }
  return {py::reinterpret_borrow<py::object>(progress)};
}

// clock=: None (the wall clock) or a callable returning nanoseconds, called with the GIL for each
// commit's timestamp (BusOptions::clock). What it raises, or a result that is not an int >= 0,
// fails that commit with InvalidArgumentError, changing nothing.
std::function<std::uint64_t()> clock_for(py::handle clock) {
  if (clock.is_none()) return {};
  if (!PyCallable_Check(clock.ptr())) {
    fail(ErrorCode::InvalidArgument, "clock must be None or a callable returning nanoseconds (an int >= 0); got ",
         std::string(py::str(py::type::of(clock).attr("__name__"))));
  }
  struct Held {
    py::object fn;
    ~Held() {  // the bus may be dropped on a thread without the GIL
      py::gil_scoped_acquire gil;
      fn = py::object();
    }
  };
  auto held = std::make_shared<Held>();
  held->fn = py::reinterpret_borrow<py::object>(clock);
  return [held]() -> std::uint64_t {
    py::gil_scoped_acquire gil;
    try {
      return to_u64(held->fn(), "the value the bus's clock returned");
    } catch (py::error_already_set& e) {
      fail(ErrorCode::InvalidArgument, "the bus's clock raised ", user_error_message(e), "; nothing was committed");
    }
  };
}

std::shared_ptr<Bus> open_bus(py::handle path, py::handle durability, py::handle threads,
                              bool must_exist, bool read_only = false, py::handle at = py::none(),
                              py::handle retention = py::none(), bool history = true,
                              py::handle queue_capacity = py::none(), py::handle progress = py::none(),
                              py::handle clock = py::none()) {
  BusOptions o;
  o.keep_history = history;
  o.clock = clock_for(clock);
  if (!queue_capacity.is_none()) {
    const std::uint64_t n = to_u64(queue_capacity, "queue_capacity");
    if (n == 0 || n > (std::uint64_t{1} << 30)) {
      fail(ErrorCode::InvalidArgument, "queue_capacity must be between 1 and 2**30 submissions; got ", n);
    }
    o.queue_capacity = n;
  }
  if (!retention.is_none()) {
    const std::uint64_t n = to_u64(retention, "retention");
    if (n == 0 || n > 1'000'000) {
      fail(ErrorCode::InvalidArgument, "retention must be None (keep all) or a number of checkpoints >= 1; got ", n);
    }
    o.retention = static_cast<unsigned>(n);
  }
  o.read_only = read_only;
  if (!at.is_none()) o.at_lsn = to_u64(at, "lsn");
  if (!threads.is_none()) {
    const std::uint64_t n = to_u64(threads, "threads");  // checked before it narrows
    if (n == 0 || n > 1024) fail(ErrorCode::InvalidArgument, "threads must be between 1 and 1024; got ", n);
    o.threads = static_cast<unsigned>(n);
  }
  o.durability = parse_durability(to_text(durability, "durability"));
  if (!path.is_none()) {
    o.path = to_fs_path(path, "path");
    if (o.path.empty()) fail(ErrorCode::InvalidArgument, "path must not be empty");
  } else if (must_exist) {
    fail(ErrorCode::InvalidArgument, "open() needs a path");
  }
  o.must_exist = must_exist;
  check_progress(progress);  // an in-memory bus has nothing to report, but a bad argument is still one
  const Progress watch = o.path.empty() ? Progress{py::none()} : progress_for(progress, read_only ? "replay" : "open");
  o.progress = watch.fn();
  std::shared_ptr<Bus> bus;
  {
    py::gil_scoped_release release;  // recovery of a big log takes a while
    bus = std::make_shared<Bus>(std::move(o));
  }
  return adopt_bus(std::move(bus));
}

std::shared_ptr<Bus> time_travel(Bus& bus, py::handle lsn, bool split_transactions, py::handle progress) {
  const Lsn at = to_u64(lsn, "lsn");
  const Progress watch = progress_for(progress, "at");
  wait_turn(bus);
  std::shared_ptr<Bus> old;
  {
    py::gil_scoped_release release;
    old = bus.at(at, split_transactions, watch.fn());
  }
  return adopt_bus(std::move(old));
}

py::list all_pages(const std::shared_ptr<Bus>& bus) {
  wait_turn(*bus);
  return make_pages(bus, bus->page_ids());
}

// `with bus.transaction():` — commit on a clean exit, rollback when the block raises.
struct TransactionGuard {
  std::shared_ptr<Bus> bus;
  bool active = false;
};

}  // namespace

void bind_bus(py::module_& m) {
  py::class_<TransactionGuard>(m, "Transaction",
                               "Context manager from Bus.transaction(): all or nothing, also across crashes.")
      .def("__enter__", [](py::object self) {
        TransactionGuard& t = self.cast<TransactionGuard&>();
        if (t.active) fail(ErrorCode::InvalidArgument, "this transaction() context is already in use");
        wait_turn(*t.bus);
        t.bus->begin_transaction();
        t.active = true;
        return self;
      })
      .def("__exit__", [](TransactionGuard& t, py::handle type, py::handle, py::handle) {
        if (!t.active) return false;
        if (!t.bus->in_transaction()) {
          if (t.bus->closed()) {  // close() inside the block rolled the transaction back
            t.active = false;
            if (type.is_none()) {
              fail(ErrorCode::Closed, "the bus was closed inside this transaction, which rolled its changes back");
            }
            return false;
          }
          // Still the opening thread's to end: left active for it.
          fail(ErrorCode::InvalidArgument, "a transaction is ended by the thread that opened it; this with-block "
               "exits on another thread");
        }
        t.active = false;
        py::gil_scoped_release release;
        if (type.is_none()) {
          t.bus->commit_transaction();
        } else {
          t.bus->rollback_transaction();
        }
        return false;
      });

  py::class_<Bus, std::shared_ptr<Bus>>(m, "Bus",
                                        "A versioned store of byte pages; every change is a delta.")
      .def(py::init([](py::handle path, py::handle durability, py::handle threads, py::handle retention,
                       py::handle history_flag, py::handle queue_capacity, py::handle progress, py::handle clock) {
             const bool history = to_flag(history_flag, "history");
             if (!history && !path.is_none()) {
               fail(ErrorCode::InvalidArgument, "history=False is for in-memory buses; a bus directory is its log");
             }
             return open_bus(path, durability, threads, false, false, py::none(), retention, history, queue_capacity,
                             progress, clock);
           }),
           "path"_a = py::none(), py::kw_only(), "durability"_a = "flush", "threads"_a = py::none(),
           "retention"_a = py::none(), "history"_a = true, "queue_capacity"_a = py::none(), "progress"_a = py::none(),
           "clock"_a = py::none(),
           "Bus(): in memory. Bus(path): a bus directory, created or recovered (newest valid "
           "checkpoint + log tail). durability: 'none' | 'flush' (default) | 'fsync'. threads: "
           "threads for batch apply (default: all hardware threads). retention: keep the newest N "
           "checkpoints and the log after the oldest (default None: keep all history). history=False "
           "(in-memory only): keep no log in memory, for speed; history, at and diff then raise "
           "HistoryUnavailableError. queue_capacity: submissions the ingest ring holds before "
           "submit() blocks (default 65536, rounded up to a power of two). progress: None (a bar "
           "while recovering a big log, where someone is watching), True, False or a "
           "callable(phase, done, total). clock: None (the wall clock) or a callable returning "
           "the commit timestamp in nanoseconds; a deterministic one (a counter) makes the log's "
           "bytes a function of the commits alone.")
      .def_static("_open", [](py::handle path, py::handle durability, py::handle threads,
                              py::handle retention, py::handle queue_capacity, py::handle progress, py::handle clock) {
        return open_bus(path, durability, threads, true, false, py::none(), retention, true, queue_capacity, progress,
                        clock);
      })
      .def_static("_replay", [](py::handle path, py::handle to, py::handle threads, py::handle progress) {
        return open_bus(path, py::str("flush"), threads, true, true, to, py::none(), true, py::none(), progress);
      })
      .def("at", [](Bus& bus, py::handle lsn, py::handle progress) { return time_travel(bus, lsn, false, progress); },
           "lsn"_a, py::kw_only(), "progress"_a = py::none(),
           "A read-only Bus holding the state as of `lsn` (from the nearest checkpoint at or "
           "before it, then the log); a transaction record is all or nothing. progress: as for Bus().")
      .def("_at_exact", [](Bus& bus, py::handle lsn) { return time_travel(bus, lsn, true, py::bool_(false)); })
      .def("_history", [](const std::shared_ptr<Bus>& bus, py::handle page) {
        wait_turn(*bus);
        // A Page or an int id may name a deleted page (its history stays in the log); a name
        // only resolves among live pages.
        const PageId id = PyUnicode_Check(page.ptr()) ? resolve_page(bus, page) : page_id_of(bus, page);
        std::vector<HistoryEntry> entries;
        {
          py::gil_scoped_release release;
          entries = bus->history(id);
        }
        py::list out;
        for (const HistoryEntry& e : entries) {
          py::list runs;
          for (const Run& r : e.runs) runs.append(py::make_tuple(r.offset, r.length));
          out.append(py::make_tuple(e.lsn, e.epoch, std::string(source_name(e.source)), e.timestamp_ns, runs));
        }
        return out;
      })
      .def("diff", [](Bus& bus, py::handle a, py::handle b) {
        wait_turn(bus);
        const Lsn from = to_u64(a, "lsn_a");
        const Lsn to = to_u64(b, "lsn_b");
        std::map<PageId, std::vector<Run>> d;
        {
          py::gil_scoped_release release;
          d = bus.diff(from, to);
        }
        py::dict out;
        for (const auto& [page, runs] : d) {
          py::list l;
          for (const Run& r : runs) l.append(py::make_tuple(r.offset, r.length));
          out[py::int_(page)] = l;
        }
        return out;
      }, "lsn_a"_a, "lsn_b"_a,
         "{page_id: [(offset, length), ...]}: the bytes written by deltas with lsn in (lsn_a, lsn_b], "
         "merged per page.")
      .def("transaction", [](const std::shared_ptr<Bus>& bus) { return TransactionGuard{bus, false}; },
           "`with bus.transaction():` applies the block's changes at once (this thread sees them; "
           "other threads wait) and commits them as one log record: all survive a crash or none "
           "do. An exception in the block rolls every change back (bytes, epochs, lsn, pages, "
           "names, metadata). Transactions do not nest.")
      .def_property_readonly("in_transaction", &Bus::in_transaction)
      .def_property_readonly("read_only", &Bus::read_only)
      .def("_verify", [](Bus& bus) {
        wait_turn(bus);
        IntegrityReport r;
        {
          py::gil_scoped_release release;
          r = bus.verify();
        }
        py::dict d;
        d["ok"] = r.ok;
        d["pages_checked"] = r.pages_checked;
        d["records_checked"] = r.records_checked;
        d["log_checked"] = r.log_checked;
        d["problems"] = r.problems;
        return d;
      })
      .def("checkpoint", [](Bus& bus, py::handle progress) {
        const Progress watch = progress_for(progress, "checkpoint");
        wait_turn(bus);
        py::gil_scoped_release release;
        return bus.checkpoint(watch.fn());
      }, py::kw_only(), "progress"_a = py::none(),
      "Write a checkpoint of the current state; returns the lsn it covers. progress: None (a bar for "
      "a long checkpoint where someone is watching), True, False or a callable(phase, done, total); "
      "if it raises, no checkpoint is left.")
      .def_property_readonly("path", [](const Bus& bus) -> py::object {
        if (bus.path().empty()) return py::none();
        return fs_str(bus.path());
      })
      .def_property_readonly("durability", [](const Bus& bus) -> py::object {
        if (bus.path().empty()) return py::none();
        return py::str(std::string(durability_name(bus.durability())));
      })
      .def_property_readonly("recovery", [](const Bus& bus) {
        const Bus::RecoveryReport& r = bus.recovery();
        py::dict d;
        d["checkpoint_lsn"] = r.checkpoint_lsn;
        d["records_replayed"] = r.records_replayed;
        d["log_last_lsn"] = r.log_last_lsn;
        d["truncated_tail"] = r.truncated_tail;
        d["tail_reason"] = r.tail_reason;
        return d;
      }, "What opening the directory found: checkpoint used, records replayed, the log's last lsn, torn tail cut.")
      // Positional only: pybind11's keyword matching costs about a microsecond per call, so the
      // keyword signature lives in Python (mmsb/__init__.py) and forwards here.
      .def("_create_page", &create_page)
      .def("page", [](const std::shared_ptr<Bus>& bus, py::handle key) {
        wait_turn(*bus);
        return make_page(bus, resolve_page(bus, key));
      }, "key"_a, "The page with this id or name; PageNotFoundError otherwise.")
      .def("pages", &all_pages, "All live pages in id order.")
      .def("delete_page", [](const std::shared_ptr<Bus>& bus, py::handle key) {
        wait_turn(*bus);
        bus->delete_page(resolve_page(bus, key));
      }, "page"_a, "Delete a page (lsn + 1); existing views keep its memory until dropped.")
      .def("apply", [](const std::shared_ptr<Bus>& bus, py::handle item) {
        wait_turn(*bus);
        PyDelta& d = delta_for(*bus, item, "apply");
        bus->apply(d);
        return d.lsn;
      }, "delta"_a, "Commit one explicit delta; sets delta.lsn / .epoch and returns the lsn.")
      .def("apply_batch", [](const std::shared_ptr<Bus>& bus, py::handle item) {
        if (!py::isinstance<PyDeltaBatch>(item)) {
          fail(ErrorCode::InvalidArgument, "apply_batch() takes an mmsb.DeltaBatch, not ",
               std::string(py::str(py::type::of(item).attr("__name__"))),
               py::isinstance<PyDelta>(item) ? "; commit a Delta with apply()" : "");
        }
        wait_turn(*bus);
        std::vector<std::uint64_t> columns;
        const DeltaBatchView view = item.cast<const PyDeltaBatch&>().snapshot(columns);
        py::gil_scoped_release release;
        return bus->apply_batch(view);
      }, "batch"_a, "Validate then apply every row (one delta each), in parallel by page; "
                    "returns the lsn of the last row. Releases the GIL.")
      .def_property_readonly("lsn", [](Bus& bus) {
        wait_turn(bus);
        return bus.read_settled([&] { return bus.lsn(); });
      })
      .def_property_readonly("closed", &Bus::closed)
      .def_property_readonly("threads", &Bus::threads)
      .def("close", [](Bus& bus) {
        py::gil_scoped_release release;
        bus.close();
      }, "End the bus (a directory bus syncs and releases its lock); later calls raise "
         "ClosedError. Views stay valid.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__len__", [](Bus& bus) {
        wait_turn(bus);
        return bus.page_count();
      })
      .def("__contains__", &contains)
      .def("__iter__", [](const std::shared_ptr<Bus>& bus) { return py::iter(all_pages(bus)); })
      .def("_stats", [](Bus& bus) {
        wait_turn(bus);
        return stats_dict(bus.read_settled([&] { return bus.stats(); }));
      })
      .def("_reset_stats", &Bus::reset_stats)
      .def_property_readonly("_instance_id", &Bus::instance_id)
      .def("_device_traffic", [](Bus& bus) {
        const DeviceTraffic t = bus.device_traffic();
        py::dict d;
        d["bytes_written"] = t.bytes_written;
        d["bytes_read"] = t.bytes_read;
        d["mirror_syncs"] = t.mirror_syncs;
        d["mirror_bytes_synced"] = t.mirror_bytes_synced;
        d["device_recomputes"] = t.device_recomputes;
        return d;
      })
      .def("_memory", [](Bus& bus) {
        wait_turn(bus);
        MemoryReport m;
        {
          py::gil_scoped_release release;  // it may wait for the prefault helper
          m = bus.memory();
        }
        return memory_dict(m);
      })
      .def("__repr__", [](Bus& bus) {
        wait_turn(bus);
        if (bus.closed()) return std::string("<mmsb.Bus (closed)>");
        const std::string where =
            bus.path().empty() ? std::string("in-memory")
            : bus.read_only()  ? "'" + bus.path() + "' read-only"
                               : "'" + bus.path() + "' durability=" + std::string(durability_name(bus.durability()));
        return "<mmsb.Bus " + where + " pages=" + std::to_string(bus.page_count()) +
               " lsn=" + std::to_string(bus.lsn()) + ">";
      });
}

}  // namespace mmsb::py_bind
