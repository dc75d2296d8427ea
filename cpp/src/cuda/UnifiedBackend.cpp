// Managed memory ("unified"): a DeviceBackend over cudaMallocManaged slabs, which host and device
// both address, with prefetch hints before kernels and host reads; never asks for more managed
// memory than the device has free.
#include <cstring>
#include <mutex>

#include "Backends.hpp"
#include "CudaCheck.hpp"
#include "CudaSupport.hpp"
#include "mmsb/core/Crc32c.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/delta/Diff.hpp"

namespace mmsb::cuda {
namespace {

// Managed memory: pages the host reads and writes in place, so the engine needs no mirror; the
// backend's transfers are plain host copies once the device is idle.
class UnifiedBackend final : public DeviceBackend {
 public:
  explicit UnifiedBackend(int ordinal)
      : location_("unified"),
        ordinal_(ordinal),
        concurrent_access_(concurrent_managed_access(ordinal)),
        pool_(SlabSource{location_,
                         [this](std::size_t n) -> void* { return allocate_managed(n); },
                         [this](void* p, std::size_t n) {
                           DeviceGuard g(ordinal_, location_);
                           check(cudaMemset(p, 0, n), location_, "cudaMemset");
                           check(cudaDeviceSynchronize(), location_, "cudaDeviceSynchronize");
                         },
                         [ordinal](void* p) { free_on(ordinal, p); }}) {}

  const std::string& location() const noexcept override { return location_; }
  int ordinal() const noexcept override { return ordinal_; }
  bool host_accessible() const noexcept override { return true; }
  bool emulated() const noexcept override { return false; }

  DevicePool::Block allocate(std::uint64_t bytes) override {
    if (bytes > 0) {
      // The pool would only say a slab was refused; a block that can never fit gets the figures.
      const auto [free_bytes, total_bytes] = memory_info();
      if (DevicePool::block_size(bytes) > free_bytes) {
        fail(ErrorCode::OutOfMemory, location_, ": a page of ", bytes,
             " bytes asks for more managed memory than CUDA device ", ordinal_, " has free (", free_bytes, " of ",
             total_bytes, " bytes); managed memory is never requested beyond the free device memory");
      }
    }
    return pool_.allocate(bytes);
  }
  void release(const DevicePool::Block& block) noexcept override { pool_.release(block); }

  void write(std::span<const DeviceRun> runs, std::span<const std::byte> host) override {
    const std::uint64_t bytes = checked_bytes(runs, host.size(), location_, "write");
    settle();
    for (const DeviceRun& r : runs) {
      if (r.length != 0) std::memcpy(r.device, host.data() + r.host_offset, r.length);  // data() may be null
    }
    count(bytes, 0, 0);
  }

  void read(std::span<const DeviceRun> runs, std::span<std::byte> host) override {
    const std::uint64_t bytes = checked_bytes(runs, host.size(), location_, "read");
    settle();
    for (const DeviceRun& r : runs) {
      if (r.length != 0) std::memcpy(host.data() + r.host_offset, r.device, r.length);
    }
    count(0, bytes, 0);
  }

  void copy(std::byte* dst, const std::byte* src, std::uint64_t bytes) override {
    settle();
    std::memcpy(dst, src, bytes);
    count(0, 0, bytes);
  }

  // Managed memory is the host's to compute on once the device is idle.
  void reduce(SemiringKind s, DType dtype, std::span<const std::byte* const> parents,
              std::span<const double> weights, std::byte* out, std::uint64_t elements) override {
    settle();
    semiring_reduce(s, dtype, parents, weights, out, elements);
    count(0, 0, 0);
  }
  void diff(const std::byte* old, const std::byte* now, std::uint64_t n, std::vector<Run>& out) override {
    settle();
    diff_runs(old, now, n, out);
    count(0, 0, 0);
  }

  std::uint32_t crc32c(const std::byte* p, std::uint64_t n) override {
    settle();
    count(0, 0, 0);
    return mmsb::crc32c(p, n);
  }

  void prefetch(const std::byte* p, std::uint64_t bytes, bool to_device, void* stream) override {
    if (!concurrent_access_ || bytes == 0) return;
    DeviceGuard g(ordinal_, location_);
    const auto s = static_cast<cudaStream_t>(stream);
#if CUDART_VERSION >= 13000
    cudaMemLocation where{};
    where.type = to_device ? cudaMemLocationTypeDevice : cudaMemLocationTypeHost;
    where.id = to_device ? ordinal_ : 0;
    check(cudaMemPrefetchAsync(p, bytes, where, 0, s), location_, "cudaMemPrefetchAsync");
#else
    check(cudaMemPrefetchAsync(p, bytes, to_device ? ordinal_ : cudaCpuDeviceId, s), location_,
          "cudaMemPrefetchAsync");
#endif
    if (!to_device) check(cudaStreamSynchronize(s), location_, "cudaStreamSynchronize");
    std::lock_guard c(counters_mutex_);
    ++counters_.prefetches;
  }

  DeviceCounters counters() const override {
    std::lock_guard g(counters_mutex_);
    return counters_;
  }
  DevicePoolStats pool_stats() const override { return pool_.stats(); }

 private:
  std::pair<std::size_t, std::size_t> memory_info() const {
    DeviceGuard g(ordinal_, location_);
    std::size_t free_bytes = 0;
    std::size_t total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), location_, "cudaMemGetInfo");
    return {free_bytes, total_bytes};
  }

  // nullptr (the pool then refuses with OutOfMemory) for more than the device has free: managed
  // memory beyond it would be oversubscribed, which can stall the whole GPU.
  void* allocate_managed(std::size_t n) const {
    if (n > memory_info().first) return nullptr;
    DeviceGuard g(ordinal_, location_);
    void* p = nullptr;
    const cudaError_t s = cudaMallocManaged(&p, n, cudaMemAttachGlobal);
    if (s == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      return nullptr;
    }
    check(s, location_, "cudaMallocManaged");
    return p;
  }

  // The host touches managed memory only while no kernel of this device may be using it.
  void settle() override {
    DeviceGuard g(ordinal_, location_);
    check(cudaDeviceSynchronize(), location_, "cudaDeviceSynchronize");
  }

  void count(std::uint64_t to_device, std::uint64_t to_host, std::uint64_t copied) {
    std::lock_guard g(counters_mutex_);
    counters_.add_transfer(to_device, to_host, copied, 0);
  }

  // Prefetching needs it (Linux with a Pascal or newer GPU); elsewhere the hints are skipped.
  static bool concurrent_managed_access(int ordinal) {
    int yes = 0;
    check(cudaDeviceGetAttribute(&yes, cudaDevAttrConcurrentManagedAccess, ordinal), "unified",
          "cudaDeviceGetAttribute");
    return yes != 0;
  }

  std::string location_;
  int ordinal_;
  bool concurrent_access_;
  DevicePool pool_;
  mutable std::mutex counters_mutex_;
  DeviceCounters counters_;
};

}  // namespace

std::unique_ptr<DeviceBackend> make_unified_backend(int ordinal) {
  require_device(ordinal, "unified (managed memory on CUDA device " + std::to_string(ordinal) + ")");
  int managed = 0;
  check(cudaDeviceGetAttribute(&managed, cudaDevAttrManagedMemory, ordinal), "unified", "cudaDeviceGetAttribute");
  if (managed == 0) {
    fail(ErrorCode::DeviceUnavailable, "unified requested, but CUDA device ", ordinal,
         " does not support managed memory");
  }
  return std::make_unique<UnifiedBackend>(ordinal);
}

}  // namespace mmsb::cuda
