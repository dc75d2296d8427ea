#pragma once
// A stand-in for the CUDA runtime, for tests on machines without a GPU (MMSB_FAKE_CUDA=ON). The
// engine's CUDA leaf (the backends, and the kernels of RunCopy.cu and DeviceCompute.cu compiled as
// C++) builds against this header instead of the toolkit's and runs in CTest, so its host logic
// and its kernels' index arithmetic are checked before a GPU is lent. What it models:
//  - devices: MMSB_FAKE_CUDA_DEVICES of them (default 2, so that device switches are exercised), each with 4 multiprocessors and
//    MMSB_FAKE_CUDA_MEMORY_MIB of memory (default 4096), counted by cudaMemGetInfo;
//  - device memory that the host cannot touch: a region guarded by a memory protection key that
//    only the thread running the runtime's own work (copies, sets, kernels) holds meanwhile, or,
//    without keys (no CPU support, or MMSB_FAKE_CUDA_NO_PKEYS=1), kept PROT_NONE outside that
//    work; host code dereferencing a device pointer crashes here as it would on a GPU;
//  - streams that run their work late: asynchronous calls queue, and a stream's queue runs only
//    at a point where CUDA guarantees completion (stream or device synchronize, a synchronous
//    call, a copy to or from pageable memory, cudaFree), so host code that reads a result or
//    reuses a pinned buffer before synchronizing sees the stale bytes it could see on a GPU;
//  - copies checked against the allocations: a range that leaves its device allocation, or a
//    copy kind that does not match where the pointers lie, fails with cudaErrorInvalidValue;
//  - kernels (cudaLaunchKernel) run by one host thread per block thread, the blocks of a grid in
//    turn, with __syncthreads a barrier of the block's threads (a kernel seen to need no barrier
//    runs its threads one after another on the launching thread from then on).
// Not modelled: warps (no warp intrinsics are provided), concurrency between streams, timing.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <utility>

#define CUDART_VERSION 13000

#define __host__
#define __device__
#define __global__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// One block runs at a time, so a block's shared memory can be a function's static storage.
#define __shared__ static

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrManagedMemory = 83,
  cudaDevAttrConcurrentManagedAccess = 89,
};

enum cudaMemLocationType {
  cudaMemLocationTypeInvalid = 0,
  cudaMemLocationTypeDevice = 1,
  cudaMemLocationTypeHost = 2,
};

struct cudaMemLocation {
  cudaMemLocationType type;
  int id;
};

constexpr int cudaCpuDeviceId = -1;
constexpr unsigned cudaStreamDefault = 0x00;
constexpr unsigned cudaStreamNonBlocking = 0x01;
constexpr unsigned cudaMemAttachGlobal = 0x01;

struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;

struct cudaDeviceProp {
  char name[256];
  int multiProcessorCount;
};

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct uint3 {
  unsigned x, y, z;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t error);
const char* cudaGetErrorName(cudaError_t error);
cudaError_t cudaMemGetInfo(std::size_t* free, std::size_t* total);

cudaError_t cudaMalloc(void** p, std::size_t bytes);
cudaError_t cudaMallocHost(void** p, std::size_t bytes);
cudaError_t cudaMallocManaged(void** p, std::size_t bytes, unsigned flags = cudaMemAttachGlobal);
cudaError_t cudaFree(void* p);
// The typed allocation overloads of the real header's C++ API.
template <class T>
cudaError_t cudaMalloc(T** p, std::size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
template <class T>
cudaError_t cudaMallocHost(T** p, std::size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(p), bytes);
}
cudaError_t cudaFreeHost(void* p);

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* p, int value, std::size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaMemPrefetchAsync(const void* p, std::size_t bytes, cudaMemLocation location, unsigned flags,
                                 cudaStream_t stream = nullptr);

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);

// Events time stamp the host clock when the stream reaches them.
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel, int block_size,
                                                          std::size_t shared_bytes);
template <class Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel* kernel, int block_size,
                                                          std::size_t shared_bytes) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, reinterpret_cast<const void*>(kernel), block_size,
                                                       shared_bytes);
}

// What the fake exposes to kernels and to its own launch template.
namespace fake_cuda {

/// Queues `body` on `stream` as a launch of `kernel` over `grid` x `block` threads: each thread
/// runs body() with threadIdx, blockIdx, blockDim and gridDim set. Returns
/// cudaErrorInvalidConfiguration for an empty grid or a block of more than 1024 threads.
cudaError_t launch(const void* kernel, dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                   std::function<void()> body);

/// The barrier of the calling kernel thread's block; `vote` joins an OR over the block's threads.
bool block_barrier(bool vote);

}  // namespace fake_cuda

inline thread_local uint3 threadIdx{};
inline thread_local uint3 blockIdx{};
inline thread_local dim3 blockDim{};
inline thread_local dim3 gridDim{};

inline void __syncthreads() { fake_cuda::block_barrier(false); }
inline int __syncthreads_or(int predicate) { return fake_cuda::block_barrier(predicate != 0) ? 1 : 0; }

template <class T>
inline T __ldg(const T* p) {
  return *p;
}

// Per byte: 0xFF where the bytes of a and b differ, else 0.
inline unsigned __vcmpne4(unsigned a, unsigned b) {
  unsigned out = 0;
  for (unsigned k = 0; k < 4; ++k) {
    if (((a >> (8 * k)) & 0xFFu) != ((b >> (8 * k)) & 0xFFu)) out |= 0xFFu << (8 * k);
  }
  return out;
}

// The argument values are read at the call, as the runtime copies them at launch.
template <class... Params>
cudaError_t cudaLaunchKernel(void (*kernel)(Params...), dim3 grid, dim3 block, void** args,
                             std::size_t shared_bytes = 0, cudaStream_t stream = nullptr) {
  auto values = [&]<std::size_t... I>(std::index_sequence<I...>) {
    return std::tuple<std::remove_cvref_t<Params>...>(*static_cast<std::remove_cvref_t<Params>*>(args[I])...);
  }(std::index_sequence_for<Params...>{});
  return fake_cuda::launch(reinterpret_cast<const void*>(kernel), grid, block, shared_bytes, stream,
                           [kernel, values] { std::apply(kernel, values); });
}
