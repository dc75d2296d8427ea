// The NCCL loader. Host code, built in every configuration: without NCCL support in the build
// (MMSB_HAVE_NCCL: CUDA and not MMSB_WITH_NCCL=OFF) nccl_available() is false, but nccl_version()
// still reports an installed library.
#include "mmsb/cuda/Nccl.hpp"

#include <dlfcn.h>

#include <memory>

#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Cuda.hpp"

namespace mmsb::cuda {
namespace {

// dlsym into a typed slot; POSIX guarantees object and function pointers convert.
template <class Fn>
bool bind(void* handle, const char* symbol, Fn& slot) {
  void* p = dlsym(handle, symbol);
  if (p == nullptr) return false;
  slot = reinterpret_cast<Fn>(p);
  return true;
}

// The process-wide load, attempted once: the library, or why it could not be loaded. Leaked on
// purpose: NCCL's threads may outlive static destruction.
struct ProcessLibrary {
  std::unique_ptr<NcclLibrary> library;
  std::string error;
};

const ProcessLibrary& process_library() noexcept {
  static const ProcessLibrary* loaded = [] {
    auto* p = new ProcessLibrary;
    try {
      p->library = std::make_unique<NcclLibrary>(NcclLibrary::kDefaultNames);
    } catch (const std::exception& e) {
      p->error = e.what();
    }
    return p;
  }();
  return *loaded;
}

}  // namespace

NcclLibrary::NcclLibrary(std::span<const char* const> names) {
  std::string tried;
  for (const char* name : names) {
    tried += tried.empty() ? "" : "; ";
    tried += name;
    void* handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      tried += std::string(": ") + (why != nullptr ? why : "dlopen failed");
      continue;
    }
    const char* missing = nullptr;
    auto need = [&](const char* symbol, auto& slot) {
      if (missing == nullptr && !bind(handle, symbol, slot)) missing = symbol;
    };
    need("ncclGetVersion", get_version);
    need("ncclGetUniqueId", get_unique_id);
    need("ncclCommInitRank", comm_init_rank);
    need("ncclCommDestroy", comm_destroy);
    need("ncclCommAbort", comm_abort);
    need("ncclCommGetAsyncError", comm_get_async_error);
    need("ncclBroadcast", broadcast);
    need("ncclAllGather", all_gather);
    need("ncclGetErrorString", get_error_string);
    if (missing == nullptr) {
      handle_ = handle;
      name_ = name;
      return;
    }
    tried += std::string(": loaded, but has no function ") + missing;
    dlclose(handle);
  }
  fail(ErrorCode::DeviceUnavailable, "NCCL could not be loaded (tried ", tried, ")");
}

NcclLibrary::~NcclLibrary() { dlclose(handle_); }

std::string NcclLibrary::version() const {
  int code = 0;
  check(get_version(&code), "ncclGetVersion");
  // NCCL_VERSION(X, Y, Z) is X*10000 + Y*100 + Z since 2.9, X*1000 + Y*100 + Z before.
  const bool wide = code >= 10000;
  const int major = wide ? code / 10000 : code / 1000;
  const int minor = wide ? code / 100 % 100 : code / 100 % 10;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(code % 100);
}

void NcclLibrary::check(NcclResult r, std::string_view what) const {
  if (r == NcclResult::Success) return;
  const char* text = get_error_string(r);
  fail(ErrorCode::DeviceUnavailable, what, " failed: ", text != nullptr ? text : "unknown error",
       " (NCCL error ", static_cast<int>(r), ")");
}

const NcclLibrary& nccl_library() {
  const ProcessLibrary& p = process_library();
  if (p.library == nullptr) fail(ErrorCode::DeviceUnavailable, p.error);
  return *p.library;
}

bool nccl_available() noexcept {
  return MMSB_HAVE_NCCL && is_available() && process_library().library != nullptr;
}

std::string nccl_version() noexcept {
  try {
    const ProcessLibrary& p = process_library();
    return p.library != nullptr ? p.library->version() : std::string();
  } catch (const std::exception&) {
    return {};
  }
}

}  // namespace mmsb::cuda
