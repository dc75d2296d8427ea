// Bus events to Python, and the hooks that release the GIL while a thread waits for the bus.
#include <pybind11/stl.h>

#include "Bindings.hpp"
#include "Convert.hpp"
#include "ErrorTranslator.hpp"

namespace mmsb::py_bind {
namespace py = pybind11;
using namespace pybind11::literals;

namespace {

// Only a thread that holds the GIL gives it up; the state restores it after the wait.
void* release_gil() { return PyGILState_Check() != 0 ? PyEval_SaveThread() : nullptr; }
void restore_gil(void* state) {
  if (state != nullptr) PyEval_RestoreThread(static_cast<PyThreadState*>(state));
}

// The sink runs on the committing thread, which may not hold the GIL (apply_batch released it).
// `dispatch` is the Python hub's function; a failure inside it must not escape into the engine,
// except a request to stop (KeyboardInterrupt, SystemExit), which the engine lets through.
Bus::EventSink make_sink(py::function dispatch) {
  // The last owner may be a thread without the GIL (the bus's destructor): dropping the
  // function needs it.
  std::shared_ptr<py::function> fn(new py::function(std::move(dispatch)), [](py::function* f) {
    py::gil_scoped_acquire gil;
    delete f;
  });
  return [fn](std::span<const BusEvent> events) {
    py::gil_scoped_acquire gil;
    try {
      py::list batch(events.size());
      for (std::size_t i = 0; i < events.size(); ++i) {
        const BusEvent& e = events[i];
        batch[i] = py::make_tuple(py::str(std::string(event_kind_name(e.kind))), e.page, e.lsn, e.epoch);
      }
      (*fn)(batch);
    } catch (py::error_already_set& e) {
      throw_if_abort(e);  // Ctrl-C in a handler: out of the call that delivered, whose commit stands
      e.discard_as_unraisable("mmsb event dispatch");
    }
  };
}

}  // namespace

std::shared_ptr<Bus> adopt_bus(std::shared_ptr<Bus> bus) {
  bus->set_blocking_hooks({&release_gil, &restore_gil});
  return bus;
}

void bind_events(py::class_<Bus, std::shared_ptr<Bus>>& cls) {
  cls.def("_set_event_sink", [](Bus& bus, py::object dispatch, const std::vector<std::string>& kinds) {
    std::uint32_t mask = 0;
    for (const std::string& k : kinds) mask |= 1u << static_cast<unsigned>(parse_event_kind(k));
    // A sink that takes no kind (mask 0) stays: it keeps the Python hub, and the handler errors
    // it counts, as long as the bus.
    if (dispatch.is_none()) {
      bus.set_event_sink(nullptr, 0);
    } else {
      bus.set_event_sink(make_sink(dispatch.cast<py::function>()), mask);
    }
  }, "dispatch"_a, "kinds"_a);
}

}  // namespace mmsb::py_bind
