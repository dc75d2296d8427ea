#include "DLPack.hpp"

#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

namespace mmsb::py_bind {
namespace py = pybind11;
namespace {

// DLPack ABI (dlpack.h v1.0), declared here so the bindings need no extra dependency.
struct DLDevice {
  std::int32_t device_type;
  std::int32_t device_id;
};
struct DLDataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;
  std::uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
struct DLPackVersion {
  std::uint32_t major;
  std::uint32_t minor;
};
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned*);
  std::uint64_t flags;
  DLTensor dl_tensor;
};
constexpr std::int32_t kDLCPU = 1, kDLCUDA = 2, kDLCUDAManaged = 13;
constexpr std::uint8_t kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLComplex = 5, kDLBool = 6;
constexpr std::uint64_t kFlagReadOnly = 1ull << 0;
constexpr std::uint64_t kFlagIsCopied = 1ull << 1;
constexpr const char* kVersionedName = "dltensor_versioned";
constexpr const char* kLegacyName = "dltensor";

// Owns everything a capsule points to. Destroyed by the DLPack deleter, possibly on a thread
// without the GIL: it touches no Python object.
struct Export {
  std::shared_ptr<Bus> bus;
  PageRecord* pinned = nullptr;  // pinned and exported (Bus::add_export) when not a copy
  std::shared_ptr<const DeviceStaging> staging;  // an edit's device copy, kept while exported
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;
  std::vector<std::byte> copy;
  DLManagedTensor legacy{};
  DLManagedTensorVersioned versioned{};
  ~Export() {
    if (pinned == nullptr) return;
    bus->drop_export(*pinned);
    bus->unpin(*pinned);
  }
};

void delete_legacy(DLManagedTensor* m) { delete static_cast<Export*>(m->manager_ctx); }
void delete_versioned(DLManagedTensorVersioned* m) { delete static_cast<Export*>(m->manager_ctx); }

// Runs when the capsule dies. A consumer renames a capsule it takes ("used_..."), and then owns
// the deleter call; otherwise the capsule still owns the tensor and must free it here.
template <class Managed>
void capsule_destructor(PyObject* capsule, const char* name) {
  if (!PyCapsule_IsValid(capsule, name)) return;
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  auto* managed = static_cast<Managed*>(PyCapsule_GetPointer(capsule, name));
  if (managed != nullptr && managed->deleter != nullptr) managed->deleter(managed);
  PyErr_Restore(type, value, traceback);
}
void versioned_capsule_destructor(PyObject* c) { capsule_destructor<DLManagedTensorVersioned>(c, kVersionedName); }
void legacy_capsule_destructor(PyObject* c) { capsule_destructor<DLManagedTensor>(c, kLegacyName); }

DLDataType dl_dtype(DType t) {
  const auto bits = static_cast<std::uint8_t>(dtype_itemsize(t) * 8);
  switch (dtype_kind(t)) {
    case 'b': return {kDLBool, 8, 1};
    case 'i': return {kDLInt, bits, 1};
    case 'u': return {kDLUInt, bits, 1};
    case 'f': return {kDLFloat, bits, 1};
    case 'c': return {kDLComplex, bits, 1};
    default: return {kDLUInt, 8, 1};  // raw pages are bytes
  }
}

// A (major, minor) or (device_type, device_id) argument of __dlpack__: two Python ints. Anything
// else is a bad argument (InvalidArgumentError, a ValueError), not a failed export (BufferError).
std::pair<std::int64_t, std::int64_t> int_pair(py::handle value, const char* what) {
  if (!py::isinstance<py::tuple>(value) || py::len(value) != 2) {
    fail(ErrorCode::InvalidArgument, what, " must be a tuple of two ints; got ", std::string(py::repr(value)));
  }
  std::int64_t v[2];
  for (int i = 0; i < 2; ++i) {
    const py::handle item = value[py::int_(i)];
    if (!PyLong_Check(item.ptr()) || PyBool_Check(item.ptr())) {
      fail(ErrorCode::InvalidArgument, what, " must be a tuple of two ints; got ", std::string(py::repr(value)));
    }
    int overflow = 0;
    v[i] = PyLong_AsLongLongAndOverflow(item.ptr(), &overflow);
    if (overflow != 0) fail(ErrorCode::InvalidArgument, what, " ", std::string(py::repr(value)), " is out of range");
  }
  return {v[0], v[1]};
}

bool wants_versioned(py::handle max_version) {
  return !max_version.is_none() && int_pair(max_version, "max_version").first >= 1;
}

// copy=: None (in place when possible, else a copy), True (always a copy) or False (never).
std::optional<bool> copy_arg(py::handle copy) {
  if (copy.is_none()) return std::nullopt;
  if (!PyBool_Check(copy.ptr())) {
    fail(ErrorCode::InvalidArgument, "copy must be None, True or False; got ", std::string(py::repr(copy)));
  }
  return copy.ptr() == Py_True;
}

DLDevice device_arg(py::handle dl_device) {
  const auto [type, id] = int_pair(dl_device, "dl_device");
  if (type < INT32_MIN || type > INT32_MAX || id < INT32_MIN || id > INT32_MAX) {
    fail(ErrorCode::InvalidArgument, "dl_device ", std::string(py::repr(dl_device)), " is out of range");
  }
  return {static_cast<std::int32_t>(type), static_cast<std::int32_t>(id)};
}

void check_stream(py::handle stream) {
  if (!stream.is_none() && (!PyLong_Check(stream.ptr()) || PyBool_Check(stream.ptr()))) {
    fail(ErrorCode::InvalidArgument, "stream must be None or an int; got ", std::string(py::repr(stream)));
  }
}

DLDevice device_of(const DevicePlace& place) {
  if (place.on_device) return {kDLCUDA, place.ordinal};
  if (place.managed) return {kDLCUDAManaged, place.ordinal};
  return {kDLCPU, 0};
}

void set_shape(Export& ex, const std::vector<std::uint64_t>& shape) {
  for (std::uint64_t d : shape) ex.shape.push_back(static_cast<std::int64_t>(d));
  ex.strides.assign(ex.shape.size(), 1);
  for (std::size_t i = ex.shape.size(); i-- > 1;) ex.strides[i - 1] = ex.strides[i] * ex.shape[i];
}

// The capsule of a tensor of `dtype` at `data` on `device`, shaped by ex's shape; it owns `ex`
// (or its consumer does, once it takes the capsule).
py::capsule make_capsule(std::unique_ptr<Export> ex, void* data, DLDevice device, DType dtype, bool versioned,
                         std::uint64_t flags) {
  DLTensor t{data, device, static_cast<std::int32_t>(ex->shape.size()), dl_dtype(dtype), ex->shape.data(),
             ex->strides.data(), 0};
  Export* raw = ex.get();
  PyObject* capsule = nullptr;
  if (versioned) {
    raw->versioned = DLManagedTensorVersioned{DLPackVersion{1, 0}, raw, &delete_versioned, flags, t};
    capsule = PyCapsule_New(&raw->versioned, kVersionedName, &versioned_capsule_destructor);
  } else {
    raw->legacy = DLManagedTensor{t, raw, &delete_legacy};
    capsule = PyCapsule_New(&raw->legacy, kLegacyName, &legacy_capsule_destructor);
  }
  if (capsule == nullptr) throw py::error_already_set();
  ex.release();  // the capsule (or its consumer) now owns the export
  return py::reinterpret_steal<py::capsule>(capsule);
}

}  // namespace

py::tuple dlpack_device(const PageHandle& page) { return dlpack_device(page.bus->device_place(page.live())); }

// A device page is exported in place: the bus's writes to device memory are complete when they
// return (the backend synchronizes its stream), so any consumer stream already sees every
// committed byte and `stream` needs no event. dl_device=(kDLCPU, 0) asks for a host copy.
py::capsule dlpack_export(const PageHandle& page, py::handle stream, py::handle max_version,
                          py::handle dl_device, py::handle copy) {
  check_stream(stream);
  const bool versioned = wants_versioned(max_version);
  const std::optional<bool> copy_wanted = copy_arg(copy);
  const DLDevice target_asked = dl_device.is_none() ? DLDevice{} : device_arg(dl_device);
  PageRecord& r = page.live();
  const DevicePlace place = page.bus->device_place(r);
  const DLDevice home = device_of(place);
  DLDevice target = home;
  bool make_copy = copy_wanted.value_or(false);
  if (!dl_device.is_none()) {
    target = target_asked;
    // The host is the one other device a page reaches: by a copy, unless copy=False forbids it.
    const bool elsewhere = target.device_type != home.device_type || target.device_id != home.device_id;
    const bool to_host = target.device_type == kDLCPU && target.device_id == 0 && copy_wanted != false;
    if (elsewhere && !to_host) {
      throw py::buffer_error("page " + std::to_string(page.id) + " lives on DLPack device (" +
                             std::to_string(home.device_type) + ", " + std::to_string(home.device_id) +
                             ") and cannot be exported to device " + std::string(py::str(dl_device)) +
                             (home.device_type == kDLCPU ? "" : " (dl_device=(1, 0) without copy=False gives a host copy)"));
    }
    make_copy = make_copy || elsewhere;
  }
  if (target.device_type == kDLCPU && !stream.is_none()) {
    throw py::buffer_error("stream must be None for a CPU export (DLPack: no stream on kDLCPU)");
  }
  if (target.device_type != kDLCPU && place.emulated) {
    throw py::buffer_error("page " + std::to_string(page.id) +
                           " lives on an emulated device (mmsb.cuda emulation for tests): its memory "
                           "cannot be handed to a DLPack consumer");
  }
  // An unversioned capsule cannot say "read-only": a consumer would hold a writable alias of the
  // page and could change it without a delta. The host gets a copy of its own instead.
  if (!versioned && target.device_type == kDLCPU && !make_copy) {
    if (copy_wanted == false) {
      throw py::buffer_error("page " + std::to_string(page.id) + " can be shared in place only read-only, which "
                             "an unversioned DLPack capsule cannot say: ask with max_version=(1, 0), or allow a copy");
    }
    make_copy = true;
  }

  auto ex = std::make_unique<Export>();
  ex->bus = page.bus;
  const DType dtype = r.dtype;
  set_shape(*ex, page.shape());

  void* data = nullptr;
  if (make_copy && target.device_type != kDLCPU) {
    throw py::buffer_error("copy=True of a device page is only available to the host: pass dl_device=(1, 0)");
  }
  if (make_copy) {
    ex->copy.resize(r.size);
    page.bus->snapshot(page.id, ex->copy);
    data = ex->copy.data();
  } else {
    PageRecord& pinned = page.bus->pin(page.id);
    page.bus->add_export(pinned);
    ex->pinned = &pinned;
    data = r.data;  // read after add_export: a move cannot swap it any more
    // Managed memory the consumer's kernels will use: migrated ahead of them on their stream
    // (DLPack: None is the legacy default stream, -1 asks for no ordering).
    if (place.managed && target.device_type == kDLCUDAManaged) {
      const std::intptr_t s = stream.is_none() ? 0 : stream.cast<std::intptr_t>();
      page.bus->prefetch_for_device(page.id, s == -1 ? nullptr : reinterpret_cast<void*>(s));
    }
  }
  return make_capsule(std::move(ex), data, target, dtype, versioned, make_copy ? kFlagIsCopied : kFlagReadOnly);
}

py::tuple dlpack_device(const DevicePlace& place) {
  const DLDevice d = device_of(place);
  return py::make_tuple(d.device_type, d.device_id);
}

// Writable and in place: the consumer edits the copy. Its memory lives as long as the capsule.
py::capsule dlpack_export_staging(std::shared_ptr<const DeviceStaging> staging, DType dtype,
                                  const std::vector<std::uint64_t>& shape, const DevicePlace& place,
                                  py::handle stream, py::handle max_version, py::handle dl_device,
                                  py::handle copy) {
  check_stream(stream);  // the copy is complete when staged (the backend synchronizes): no event needed
  const bool versioned = wants_versioned(max_version);
  const DLDevice home = device_of(place);
  if (!dl_device.is_none()) {
    const DLDevice target = device_arg(dl_device);
    if (target.device_type != home.device_type || target.device_id != home.device_id) {
      throw py::buffer_error("the device copy of page " + std::to_string(staging->page()) +
                             " is exported only on its own device (" + std::to_string(home.device_type) + ", " +
                             std::to_string(home.device_id) + ")");
    }
  }
  if (copy_arg(copy) == true) {
    throw py::buffer_error("the device copy of page " + std::to_string(staging->page()) +
                           " is exported in place (the edit commits what its consumer writes there): copy=True "
                           "would write elsewhere");
  }
  if (place.emulated) {
    throw py::buffer_error("the device copy of page " + std::to_string(staging->page()) +
                           " lives on an emulated device (mmsb.cuda emulation for tests): its memory "
                           "cannot be handed to a DLPack consumer");
  }
  auto ex = std::make_unique<Export>();
  set_shape(*ex, shape);
  void* data = staging->data();
  ex->staging = std::move(staging);
  return make_capsule(std::move(ex), data, home, dtype, versioned, 0);
}

}  // namespace mmsb::py_bind
