// The stand-in CUDA runtime of include/cuda_runtime.h (what it models is said there).
//
// All state sits behind one recursive mutex, held while queued work runs, so device memory's
// protection is lifted for one piece of work at a time. A kernel's threads run on a pool of host threads
// that grows to the largest block launched; they never take the mutex.
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime.h>

struct CUstream_st {
  bool blocking = true;
  std::deque<std::function<void()>> work;
};

struct CUevent_st {
  std::optional<std::chrono::steady_clock::time_point> reached;  // when its stream ran past it
};

namespace fake_cuda {
namespace {

constexpr std::size_t kAlign = 256;  // cudaMalloc's alignment
constexpr std::size_t kPage = 4096;
constexpr unsigned kMultiprocessors = 4;
constexpr unsigned kThreadsPerMultiprocessor = 2048;
constexpr unsigned kMaxBlockThreads = 1024;

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

std::size_t env_number(const char* name, std::size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return static_cast<std::size_t>(std::strtoull(v, nullptr, 10));
}

enum class Kind { Device, Managed, Pinned };

struct Allocation {
  std::size_t size;
  Kind kind;
  int device;
};

// One device's share of the region: its free ranges by start, and what is allocated on it.
struct Device {
  std::byte* base = nullptr;
  std::map<std::byte*, std::size_t> free;
  std::size_t used = 0;  // device and managed allocations
  std::size_t high = 0;  // bytes from base to the page end of the highest allocation ever made
};

thread_local int t_device = 0;
thread_local cudaError_t t_last_error = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  t_last_error = e;
  return e;
}

// The protection key of device memory, or -1 where the CPU or kernel has none (then mprotect).
int g_key = -1;

// The kernel executor: a pool of host threads, one per block thread. They only ever run kernels,
// so they hold the key's access for good. Waking hundreds of threads costs far more than most
// kernels here, so a kernel seen to finish without __syncthreads runs on the calling thread
// afterwards, its threads one after another; one that needs barriers after all then aborts
// the process with a message (CUDA kernels use barriers in every launch or in none).
class Executor {
 public:
  ~Executor() {
    {
      std::lock_guard g(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  void run(const void* kernel, dim3 grid, dim3 block, const std::function<void()>& body) {
    const unsigned threads = block.x * block.y * block.z;
    Job job{body, grid, block, threads};
    if (without_barriers_.count(kernel) != 0) {
      job.alone = true;
      for (unsigned t = 0; t < threads; ++t) run_blocks(job, t);
      return;
    }
    run_threads(job, threads);
    if (!job.synced.load()) without_barriers_.insert(kernel);
  }

  // One barrier of the calling thread's block; returns the OR of the votes its threads gave.
  static bool barrier(bool vote) {
    Job& job = *t_job;
    if (job.alone) {
      std::fputs("fake CUDA runtime: a kernel that ran without __syncthreads called it\n", stderr);
      std::abort();
    }
    t_synced = true;
    job.synced.store(true, std::memory_order_relaxed);
    // Three vote slots in turn: the one cleared here was last read before the previous barrier.
    const unsigned k = t_barriers++ % 3;
    if (t_thread == 0) job.votes[(k + 1) % 3].store(0, std::memory_order_relaxed);
    if (vote) job.votes[k].store(1, std::memory_order_relaxed);
    job.sync.arrive_and_wait();
    return job.votes[k].load(std::memory_order_relaxed) != 0;
  }

 private:
  struct Job {
    Job(const std::function<void()>& b, dim3 g, dim3 bl, unsigned n) : body(b), grid(g), block(bl), sync(n) {}
    const std::function<void()>& body;
    dim3 grid;
    dim3 block;
    std::barrier<> sync;
    std::atomic<int> votes[3] = {0, 0, 0};
    std::atomic<bool> synced{false};  // some thread met a barrier
    bool alone = false;               // run on the calling thread
    unsigned finished = 0;            // guarded by the executor's mutex
  };

  void run_threads(Job& job, unsigned threads) {
    std::unique_lock lock(mutex_);
    while (threads_.size() < threads) {
      const auto index = static_cast<unsigned>(threads_.size());
      threads_.emplace_back([this, index] { serve(index); });
    }
    job_ = &job;
    ++generation_;
    wake_.notify_all();
    done_.wait(lock, [&] { return job.finished == threads; });
    job_ = nullptr;
  }

  void serve(unsigned index) {
    if (g_key >= 0) pkey_set(g_key, 0);
    std::uint64_t seen = 0;
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || (generation_ != seen && job_ != nullptr); });
      if (stopping_) return;
      seen = generation_;
      Job& job = *job_;
      const unsigned threads = job.block.x * job.block.y * job.block.z;
      if (index >= threads) continue;
      lock.unlock();
      run_blocks(job, index);
      lock.lock();
      if (++job.finished == threads) done_.notify_all();
    }
  }

  // Thread `index` of every block of the grid, the blocks in turn. A block whose threads met at
  // a barrier ends with one more, so the next block's use of the (static) shared memory cannot
  // overtake this one's; a block without barriers needs none, its threads being independent.
  static void run_blocks(Job& job, unsigned index) {
    t_job = &job;
    t_thread = index;
    t_barriers = 0;
    blockDim = job.block;
    gridDim = job.grid;
    threadIdx = {index % job.block.x, index / job.block.x % job.block.y, index / (job.block.x * job.block.y)};
    for (unsigned z = 0; z < job.grid.z; ++z) {
      for (unsigned y = 0; y < job.grid.y; ++y) {
        for (unsigned x = 0; x < job.grid.x; ++x) {
          blockIdx = {x, y, z};
          t_synced = false;
          job.body();
          if (t_synced) job.sync.arrive_and_wait();
        }
      }
    }
    t_job = nullptr;
  }

  static inline thread_local Job* t_job = nullptr;
  static inline thread_local unsigned t_thread = 0;
  static inline thread_local unsigned t_barriers = 0;
  static inline thread_local bool t_synced = false;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> threads_;
  std::set<const void*> without_barriers_;  // kernels seen to run without __syncthreads
  Job* job_ = nullptr;
  std::uint64_t generation_ = 0;
  bool stopping_ = false;
};

class Runtime {
 public:
  Runtime()
      : devices_(static_cast<int>(env_number("MMSB_FAKE_CUDA_DEVICES", 2))),
        memory_(round_up(env_number("MMSB_FAKE_CUDA_MEMORY_MIB", 4096) << 20, kPage)) {
    if (devices_ > 0) {
      void* p = mmap(nullptr, memory_ * static_cast<std::size_t>(devices_), PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) std::abort();
      region_ = static_cast<std::byte*>(p);
      if (env_number("MMSB_FAKE_CUDA_NO_PKEYS", 0) == 0) g_key = pkey_alloc(0, PKEY_DISABLE_ACCESS);
    }
    device_.resize(static_cast<std::size_t>(devices_));
    for (int d = 0; d < devices_; ++d) {
      Device& dev = device_[static_cast<std::size_t>(d)];
      dev.base = region_ + memory_ * static_cast<std::size_t>(d);
      dev.free.emplace(dev.base, memory_);
    }
  }

  std::recursive_mutex mutex;
  int devices() const { return devices_; }
  std::size_t memory() const { return memory_; }
  Device& device(int d) { return device_[static_cast<std::size_t>(d)]; }
  Executor& executor() { return executor_; }

  // The allocation holding all of [p, p + n), or nullptr.
  const Allocation* holding(const void* p, std::size_t n) const {
    const auto* b = static_cast<const std::byte*>(p);
    auto it = allocations_.upper_bound(b);
    if (it == allocations_.begin()) return nullptr;
    --it;
    const std::size_t at = static_cast<std::size_t>(b - it->first);
    if (b < it->first || at > it->second.size || n > it->second.size - at) return nullptr;
    return &it->second;
  }
  bool in_region(const void* p) const {
    const auto* b = static_cast<const std::byte*>(p);
    return b >= region_ && b < region_ + memory_ * static_cast<std::size_t>(devices_);
  }

  void* allocate_device(int d, std::size_t bytes) {
    Device& dev = device(d);
    const std::size_t n = round_up(std::max<std::size_t>(bytes, 1), kAlign);
    for (auto it = dev.free.begin(); it != dev.free.end(); ++it) {
      if (it->second < n) continue;
      std::byte* p = it->first;
      const std::size_t left = it->second - n;
      dev.free.erase(it);
      if (left > 0) dev.free.emplace(p + n, left);
      dev.used += n;
      const std::size_t high = round_up(static_cast<std::size_t>(p + n - dev.base), kPage);
      // With a key, pages become accessible as allocations first reach them, and the key alone
      // guards them; without, they stay PROT_NONE and each Open lifts that.
      if (g_key >= 0 && high > dev.high &&
          pkey_mprotect(dev.base + dev.high, high - dev.high, PROT_READ | PROT_WRITE, g_key) != 0) {
        std::perror("fake CUDA runtime: pkey_mprotect of device memory");
        std::abort();
      }
      dev.high = std::max(dev.high, high);
      allocations_.emplace(p, Allocation{n, Kind::Device, d});
      return p;
    }
    return nullptr;
  }

  void* allocate_host(std::size_t bytes, Kind kind, int d) {
    const std::size_t n = round_up(std::max<std::size_t>(bytes, 1), kPage);
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    allocations_.emplace(static_cast<std::byte*>(p), Allocation{n, kind, d});
    if (kind == Kind::Managed) device(d).used += n;
    return p;
  }

  // Frees the allocation starting at p of one of `kinds`; false if there is none.
  bool release(void* p, std::initializer_list<Kind> kinds) {
    auto it = allocations_.find(static_cast<std::byte*>(p));
    if (it == allocations_.end() || std::find(kinds.begin(), kinds.end(), it->second.kind) == kinds.end()) {
      return false;
    }
    const Allocation a = it->second;
    allocations_.erase(it);
    auto* b = static_cast<std::byte*>(p);
    if (a.kind != Kind::Device) {
      if (a.kind == Kind::Managed) device(a.device).used -= a.size;
      munmap(p, a.size);
      return true;
    }
    Device& dev = device(a.device);
    dev.used -= a.size;
    // Give whole pages back to the system, then merge the range with its free neighbours.
    std::byte* first = reinterpret_cast<std::byte*>(round_up(reinterpret_cast<std::uintptr_t>(b), kPage));
    std::byte* last = reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(b + a.size) / kPage * kPage);
    if (first < last) madvise(first, static_cast<std::size_t>(last - first), MADV_DONTNEED);
    std::size_t size = a.size;
    auto next = dev.free.find(b + size);
    if (next != dev.free.end()) {
      size += next->second;
      dev.free.erase(next);
    }
    auto after = dev.free.upper_bound(b);
    if (after != dev.free.begin()) {
      auto before = std::prev(after);
      if (before->first + before->second == b) {
        before->second += size;
        return true;
      }
    }
    dev.free.emplace(b, size);
    return true;
  }

  // Streams: the legacy default stream (nullptr, the DLPack values 1 and 2, and every blocking
  // stream share its queue) and the non-blocking ones made here.
  bool valid(cudaStream_t s) const {
    return s == nullptr || is_legacy_handle(s) || streams_.count(s) != 0;
  }
  std::deque<std::function<void()>>& queue(cudaStream_t s) {
    if (s == nullptr || is_legacy_handle(s) || s->blocking) return legacy_.work;
    return s->work;
  }
  cudaStream_t create(unsigned flags) {
    auto* s = new CUstream_st;
    s->blocking = (flags & cudaStreamNonBlocking) == 0;
    streams_.insert(s);
    return s;
  }
  void destroy(cudaStream_t s) {
    drain(queue(s));
    streams_.erase(s);
    delete s;
  }

  // Runs the queued work, in order; each piece opens the device memory it touches (Open).
  void drain(std::deque<std::function<void()>>& q) {
    while (!q.empty()) {
      std::function<void()> work = std::move(q.front());
      q.pop_front();
      work();
    }
  }
  void drain_all() {
    drain(legacy_.work);
    for (cudaStream_t s : streams_) drain(s->work);
  }

  // Lets the calling thread touch device memory for a scope. With a protection key that is one
  // register write (pkey_set), and other host threads stay locked out meanwhile. Without, the
  // pages are unprotected: those of the ranges given (a copy's or a memset's; host ranges are
  // left alone), or with none every device's allocated span (a kernel may touch any of it).
  // mprotect costs in proportion to the resident pages it changes, hence the ranges.
  class Open {
   public:
    explicit Open(Runtime& r) : r_(r) {
      if (g_key < 0) {
        for (const Device& dev : r_.device_) {
          if (dev.high > 0) spans_.emplace_back(dev.base, dev.high);
        }
      }
      set(true);
    }
    Open(Runtime& r, std::initializer_list<std::pair<const void*, std::size_t>> ranges) : r_(r) {
      if (g_key < 0) {
        for (const auto& [p, n] : ranges) {
          if (n == 0 || !r_.in_region(p)) continue;
          const auto first = reinterpret_cast<std::uintptr_t>(p) / kPage * kPage;
          const auto last = round_up(reinterpret_cast<std::uintptr_t>(p) + n, kPage);
          spans_.emplace_back(reinterpret_cast<std::byte*>(first), last - first);
        }
      }
      set(true);
    }
    ~Open() { set(false); }
    Open(const Open&) = delete;
    Open& operator=(const Open&) = delete;

   private:
    void set(bool open) {
      if (g_key >= 0) {
        if (open) previous_ = pkey_get(g_key);
        pkey_set(g_key, open ? 0 : static_cast<unsigned>(previous_));
        return;
      }
      for (const auto& [p, n] : spans_) {
        if (mprotect(p, n, open ? PROT_READ | PROT_WRITE : PROT_NONE) != 0) {
          std::perror("fake CUDA runtime: mprotect of device memory");
          std::abort();
        }
      }
    }
    Runtime& r_;
    std::vector<std::pair<std::byte*, std::size_t>> spans_;
    int previous_ = PKEY_DISABLE_ACCESS;
  };

 private:
  static bool is_legacy_handle(cudaStream_t s) {
    const auto v = reinterpret_cast<std::uintptr_t>(s);
    return v == 1 || v == 2;  // cudaStreamLegacy, cudaStreamPerThread
  }

  int devices_;
  std::size_t memory_;
  std::byte* region_ = nullptr;
  std::vector<Device> device_;
  std::map<const std::byte*, Allocation, std::less<>> allocations_;
  std::set<cudaStream_t> streams_;
  CUstream_st legacy_;
  Executor executor_;
};

Runtime& rt() {
  static Runtime* r = new Runtime;  // never destroyed: worker threads and static destructors may outlive main
  return *r;
}

using Lock = std::lock_guard<std::recursive_mutex>;

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
