// The stand-in CUDA runtime's API (include/cuda_runtime.h says what it models): each call checks
// its arguments as CUDA does, then queues its work on a stream or runs it at once where CUDA
// promises completion (Runtime.hpp keeps the state, Executor.hpp runs kernels).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>

#include <cuda_runtime.h>

#include "Runtime.hpp"

namespace fake_cuda {
namespace {

thread_local int t_device = 0;
thread_local cudaError_t t_last_error = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  t_last_error = e;
  return e;
}

enum class Side { Host, Pinned, Device };

// Where [p, p + n) lies, or nullopt when it straddles an allocation's end in device memory.
std::optional<Side> side_of(const void* p, std::size_t n) {
  Runtime& r = rt();
  if (const Allocation* a = r.holding(p, n)) {
    if (a->kind == Kind::Pinned) return Side::Pinned;
    return Side::Device;  // managed memory counts as device memory for the copy kinds
  }
  if (r.in_region(p)) return std::nullopt;
  if (const Allocation* a = r.holding(p, 1); a != nullptr && a->kind != Kind::Pinned) return std::nullopt;
  return Side::Host;
}

bool kind_matches(cudaMemcpyKind kind, Side dst, Side src) {
  const bool d = dst == Side::Device;
  const bool s = src == Side::Device;
  switch (kind) {
    case cudaMemcpyHostToHost: return !d && !s;
    case cudaMemcpyHostToDevice: return d && !s;
    case cudaMemcpyDeviceToHost: return !d && s;
    case cudaMemcpyDeviceToDevice: return d && s;
    case cudaMemcpyDefault: return true;
  }
  return false;
}

}  // namespace

cudaError_t launch(const void* kernel, dim3 grid, dim3 block, std::size_t, cudaStream_t stream,
                   std::function<void()> body) {
  Lock g(rt().mutex);
  const std::uint64_t threads = std::uint64_t{block.x} * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 || threads == 0 ||
      threads > kMaxBlockThreads) {
    return fail(cudaErrorInvalidConfiguration);
  }
  if (!rt().valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  rt().queue(stream).push_back([kernel, grid, block, body = std::move(body)] {
    Runtime::Open open(rt());
    rt().executor().run(kernel, grid, block, body);
  });
  return cudaSuccess;
}

bool block_barrier(bool vote) { return Executor::barrier(vote); }

}  // namespace fake_cuda

using fake_cuda::fail;
using fake_cuda::Lock;
using fake_cuda::rt;

cudaError_t cudaGetDeviceCount(int* count) {
  if (rt().devices() == 0) return fail(cudaErrorNoDevice);
  *count = rt().devices();
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (rt().devices() == 0) return fail(cudaErrorNoDevice);
  *device = fake_cuda::t_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= rt().devices()) return fail(cudaErrorInvalidDevice);
  fake_cuda::t_device = device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= rt().devices()) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = static_cast<int>(fake_cuda::kMultiprocessors); return cudaSuccess;
    case cudaDevAttrManagedMemory:
    case cudaDevAttrConcurrentManagedAccess: *value = 1; return cudaSuccess;
  }
  return fail(cudaErrorInvalidValue);
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = fake_cuda::t_last_error;
  fake_cuda::t_last_error = cudaSuccess;
  return e;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
  }
  return "unknown error";
}

cudaError_t cudaMemGetInfo(std::size_t* free, std::size_t* total) {
  Lock g(rt().mutex);
  if (rt().devices() == 0) return fail(cudaErrorNoDevice);
  *total = rt().memory();
  *free = rt().memory() - rt().device(fake_cuda::t_device).used;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  Lock g(rt().mutex);
  if (rt().devices() == 0) return fail(cudaErrorNoDevice);
  *p = rt().allocate_device(fake_cuda::t_device, bytes);
  return *p != nullptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaMallocHost(void** p, std::size_t bytes) {
  Lock g(rt().mutex);
  *p = rt().allocate_host(bytes, fake_cuda::Kind::Pinned, fake_cuda::t_device);
  return *p != nullptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaMallocManaged(void** p, std::size_t bytes, unsigned flags) {
  Lock g(rt().mutex);
  if (rt().devices() == 0) return fail(cudaErrorNoDevice);
  if (flags != cudaMemAttachGlobal) return fail(cudaErrorInvalidValue);
  const std::size_t left = rt().memory() - rt().device(fake_cuda::t_device).used;
  if (fake_cuda::round_up(std::max<std::size_t>(bytes, 1), fake_cuda::kPage) > left) {
    *p = nullptr;
    return fail(cudaErrorMemoryAllocation);
  }
  *p = rt().allocate_host(bytes, fake_cuda::Kind::Managed, fake_cuda::t_device);
  return *p != nullptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

// cudaFree and cudaFreeHost wait for the device first, as CUDA's do.
cudaError_t cudaFree(void* p) {
  if (p == nullptr) return cudaSuccess;
  Lock g(rt().mutex);
  rt().drain_all();
  return rt().release(p, {fake_cuda::Kind::Device, fake_cuda::Kind::Managed}) ? cudaSuccess
                                                                              : fail(cudaErrorInvalidValue);
}

cudaError_t cudaFreeHost(void* p) {
  if (p == nullptr) return cudaSuccess;
  Lock g(rt().mutex);
  rt().drain_all();
  return rt().release(p, {fake_cuda::Kind::Pinned}) ? cudaSuccess : fail(cudaErrorInvalidValue);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  Lock g(rt().mutex);
  if (!rt().valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  const auto to = fake_cuda::side_of(dst, bytes);
  const auto from = fake_cuda::side_of(src, bytes);
  if (!to || !from || !fake_cuda::kind_matches(kind, *to, *from)) return fail(cudaErrorInvalidValue);
  auto copy = [dst, src, bytes] {
    const fake_cuda::Runtime::Open open(rt(), {{dst, bytes}, {src, bytes}});
    std::memcpy(dst, src, bytes);
  };
  // Pageable host memory makes the copy synchronous: CUDA stages it through its own buffers.
  if (*to == fake_cuda::Side::Host || *from == fake_cuda::Side::Host) {
    rt().drain(rt().queue(stream));
    copy();
  } else {
    rt().queue(stream).push_back(copy);
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  Lock g(rt().mutex);
  const cudaError_t s = cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
  if (s == cudaSuccess) rt().drain(rt().queue(nullptr));
  return s;
}

cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t stream) {
  Lock g(rt().mutex);
  if (!rt().valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  if (fake_cuda::side_of(p, bytes) != fake_cuda::Side::Device) return fail(cudaErrorInvalidValue);
  rt().queue(stream).push_back([p, value, bytes] {
    const fake_cuda::Runtime::Open open(rt(), {{p, bytes}});
    std::memset(p, value, bytes);
  });
  return cudaSuccess;
}

cudaError_t cudaMemset(void* p, int value, std::size_t bytes) {
  Lock g(rt().mutex);
  const cudaError_t s = cudaMemsetAsync(p, value, bytes, nullptr);
  if (s == cudaSuccess) rt().drain(rt().queue(nullptr));
  return s;
}

cudaError_t cudaMemPrefetchAsync(const void* p, std::size_t bytes, cudaMemLocation location, unsigned flags,
                                 cudaStream_t stream) {
  Lock g(rt().mutex);
  if (!rt().valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  const fake_cuda::Allocation* a = rt().holding(p, bytes);
  if (a == nullptr || a->kind != fake_cuda::Kind::Managed || flags != 0) return fail(cudaErrorInvalidValue);
  if (location.type == cudaMemLocationTypeDevice && (location.id < 0 || location.id >= rt().devices())) {
    return fail(cudaErrorInvalidDevice);
  }
  if (location.type != cudaMemLocationTypeDevice && location.type != cudaMemLocationTypeHost) {
    return fail(cudaErrorInvalidValue);
  }
  rt().queue(stream).push_back([] {});  // a hint: ordered on the stream, no effect on the bytes
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  Lock g(rt().mutex);
  if (rt().devices() == 0) return fail(cudaErrorNoDevice);
  *stream = rt().create(flags);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Lock g(rt().mutex);
  if (stream == nullptr || !rt().valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  rt().destroy(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Lock g(rt().mutex);
  if (!rt().valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  rt().drain(rt().queue(stream));
  return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  Lock g(rt().mutex);
  if (!rt().valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  // Busy once: a caller polling for completion must poll again.
  if (rt().queue(stream).empty()) return cudaSuccess;
  rt().drain(rt().queue(stream));
  return cudaErrorNotReady;
}

cudaError_t cudaDeviceSynchronize() {
  Lock g(rt().mutex);
  if (rt().devices() == 0) return fail(cudaErrorNoDevice);
  rt().drain_all();
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= rt().devices()) return fail(cudaErrorInvalidDevice);
  *prop = {};
  std::snprintf(prop->name, sizeof prop->name, "mmsb fake CUDA device %d", device);
  prop->multiProcessorCount = static_cast<int>(fake_cuda::kMultiprocessors);
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  Lock g(rt().mutex);
  rt().drain_all();  // a record still queued would write it
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Lock g(rt().mutex);
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (!rt().valid(stream)) return fail(cudaErrorInvalidResourceHandle);
  event->reached.reset();
  rt().queue(stream).push_back([event] { event->reached = std::chrono::steady_clock::now(); });
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  Lock g(rt().mutex);
  if (event == nullptr) return fail(cudaErrorInvalidResourceHandle);
  rt().drain_all();
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Lock g(rt().mutex);
  if (start == nullptr || end == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (!start->reached || !end->reached) return fail(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(*end->reached - *start->reached).count();
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel, int block_size,
                                                          std::size_t) {
  if (kernel == nullptr || block_size <= 0 || block_size > static_cast<int>(fake_cuda::kMaxBlockThreads)) {
    return fail(cudaErrorInvalidValue);
  }
  *blocks = static_cast<int>(fake_cuda::kThreadsPerMultiprocessor) / block_size;
  return cudaSuccess;
}
