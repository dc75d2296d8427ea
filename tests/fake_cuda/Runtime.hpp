#pragma once
// The stand-in runtime's state: fake devices with their memory and allocations, and the streams'
// queues of late work (see include/cuda_runtime.h for what it models).
#include <sys/mman.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <initializer_list>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include <cuda_runtime.h>

#include "Executor.hpp"

struct CUstream_st {
  bool blocking = true;
  std::deque<std::function<void()>> work;
};

struct CUevent_st {
  std::optional<std::chrono::steady_clock::time_point> reached;  // when its stream ran past it
};

namespace fake_cuda {

inline constexpr std::size_t kAlign = 256;  // cudaMalloc's alignment
inline constexpr std::size_t kPage = 4096;
inline constexpr unsigned kMultiprocessors = 4;
inline constexpr unsigned kThreadsPerMultiprocessor = 2048;
inline constexpr unsigned kMaxBlockThreads = 1024;

inline std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

inline std::size_t env_number(const char* name, std::size_t fallback) {
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

/// The fake devices, their memory and streams. All of it is guarded by `mutex`, which the API
/// functions hold while they run queued work, so device memory is lent to one piece of work at a
/// time. One instance for the process (rt()).
class Runtime {
 public:
  Runtime();

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

  /// A device allocation of `bytes` on device `d`, 256-byte aligned, or nullptr when full.
  void* allocate_device(int d, std::size_t bytes);

  /// Host memory for pinned or managed (counted on device `d`) allocations, or nullptr.
  void* allocate_host(std::size_t bytes, Kind kind, int d);

  /// Frees the allocation starting at p of one of `kinds`; false if there is none.
  bool release(void* p, std::initializer_list<Kind> kinds);

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
      if (r_.key_ < 0) {
        for (const Device& dev : r_.device_) {
          if (dev.high > 0) spans_.emplace_back(dev.base, dev.high);
        }
      }
      set(true);
    }
    Open(Runtime& r, std::initializer_list<std::pair<const void*, std::size_t>> ranges) : r_(r) {
      if (r_.key_ < 0) {
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
      if (r_.key_ >= 0) {
        if (open) previous_ = pkey_get(r_.key_);
        pkey_set(r_.key_, open ? 0 : static_cast<unsigned>(previous_));
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
  std::byte* region_;
  int key_;  // protection key of device memory, -1 for none (then mprotect)
  std::vector<Device> device_;
  std::map<const std::byte*, Allocation, std::less<>> allocations_;
  std::set<cudaStream_t> streams_;
  CUstream_st legacy_;
  Executor executor_;
};

/// The process's runtime, made on first use and never destroyed (kernel threads and static
/// destructors may outlive main).
Runtime& rt();

using Lock = std::lock_guard<std::recursive_mutex>;

}  // namespace fake_cuda
