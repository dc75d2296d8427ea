#pragma once
/// DeviceBackend: what the engine needs from a device that holds page memory, behind one
/// interface so the engine never includes CUDA headers. Implementations: the CUDA backend
/// (CudaBackend.cpp: cudaMalloc'd pool slabs, a pinned staging buffer, scatter/gather kernels on
/// one stream), managed memory for location "unified", and an emulation over host memory that
/// the tests install with emulate_devices() so the engine's device paths run on machines without
/// a GPU.
///
/// Device addresses are opaque to the host: only the backend reads or writes them. The emulation
/// stores every byte inverted, so engine code that touches device memory directly, instead of
/// going through the backend, reads and writes garbage and the tests catch it.
///
/// Thread safety: every member may be called from any thread. Transfers of one device are
/// serialized by the backend (one staging buffer, one stream); allocate/release take the pool's
/// mutex. Every transfer is complete when its call returns (the stream is synchronized), so a
/// consumer handed a device address never sees a write half done.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mmsb/cuda/DevicePool.hpp"
#include "mmsb/delta/Delta.hpp"
#include "mmsb/graph/Semiring.hpp"
#include "mmsb/page/DType.hpp"

namespace mmsb::cuda {

/// The most a CUDA device's staging buffers hold: a larger transfer goes in several rounds (it
/// bounds the pinned host memory a device holds, which cannot be swapped, and its twin on the
/// device). Smaller under the tests' stand-in runtime, whose kernels run on host threads, so that
/// its tests cross it at a fraction of the cost.
#if defined(MMSB_FAKE_CUDA)
inline constexpr std::uint64_t kStagingCapBytes = std::uint64_t{16} << 20;
#else
inline constexpr std::uint64_t kStagingCapBytes = std::uint64_t{256} << 20;
#endif

/// One piece of a transfer: `length` bytes at device address `device` and at `host_offset` in
/// the host buffer of the call.
struct DeviceRun {
  std::byte* device = nullptr;
  std::uint64_t host_offset = 0;
  std::uint64_t length = 0;
};

/// Monotonic counters of one device since it was first used.
struct DeviceCounters {
  std::uint64_t bytes_to_device = 0;  ///< payload bytes written by write(), reduce() tables
  std::uint64_t bytes_to_host = 0;    ///< bytes read back by read() and diff() (its mask)
  std::uint64_t bytes_copied = 0;     ///< device-to-device bytes of copy()
  std::uint64_t transfers = 0;        ///< write/read/copy/reduce/diff calls
  std::uint64_t kernels = 0;          ///< kernels launched (0 for the emulation)
  std::uint64_t prefetches = 0;       ///< prefetch hints given for managed memory

  /// Counts one write/read/copy call.
  void add_transfer(std::uint64_t to_device, std::uint64_t to_host, std::uint64_t copied,
                    std::uint64_t launched) noexcept {
    bytes_to_device += to_device;
    bytes_to_host += to_host;
    bytes_copied += copied;
    kernels += launched;
    ++transfers;
  }
};

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  /// The location string pages use for it: "cuda:N" or "unified".
  virtual const std::string& location() const noexcept = 0;
  /// CUDA device ordinal (the DLPack device id).
  virtual int ordinal() const noexcept = 0;
  /// True when the host may read and write the memory directly (managed memory): such pages
  /// need no host mirror and no transfers.
  virtual bool host_accessible() const noexcept = 0;
  /// True for the host-memory emulation (tests); DLPack refuses to export its memory.
  virtual bool emulated() const noexcept = 0;

  /// A zero-filled block of at least `bytes`. Throws Error(OutOfMemory) naming the device when it
  /// has no room (managed memory: never more than the device reports free), nothing allocated.
  virtual DevicePool::Block allocate(std::uint64_t bytes) = 0;
  /// Gives back a block allocate() returned, exactly once.
  virtual void release(const DevicePool::Block& block) noexcept = 0;

  /// Host to device: for each run, host[host_offset, +length) to `device`. The runs must not
  /// overlap on the device (resolve_overlaps() makes them so). One staging copy and one scatter
  /// kernel per call (split only when the staging buffer is smaller than the payload).
  /// Throws Error(DeviceUnavailable) naming the CUDA error; memory may then be partly written.
  virtual void write(std::span<const DeviceRun> runs, std::span<const std::byte> host) = 0;
  /// Device to host: for each run, `device` to host[host_offset, +length) (one gather kernel and
  /// one copy per call, as write()). Throws as write().
  virtual void read(std::span<const DeviceRun> runs, std::span<std::byte> host) = 0;
  /// Device to device on this device; [src, +bytes) and [dst, +bytes) must not overlap.
  virtual void copy(std::byte* dst, const std::byte* src, std::uint64_t bytes) = 0;

  /// The built-in reduce recompute run where its pages live: out[i] = ⊕_k (w_k ⊗ parents[k][i])
  /// for i < count, over this device's memory, giving exactly the bytes semiring_reduce gives on
  /// the host (the same scalar operations in the same order per element, no FMA contraction).
  /// Preconditions as semiring_reduce (a supported pair, valid weights, `out` aliasing no parent).
  /// Throws Error(DeviceUnavailable) naming the CUDA error; `out` may then be partly written.
  virtual void reduce(SemiringKind s, DType dtype, std::span<const std::byte* const> parents,
                      std::span<const double> weights, std::byte* out, std::uint64_t count) = 0;
  /// Appends to `out` the runs where this device's `now` differs from `old` (n bytes each):
  /// exactly the runs diff_runs gives for the same bytes. Only a change mask crosses to the host
  /// (a flag per chunk, then the mask of the chunks that changed), never the bytes compared.
  /// Throws as reduce().
  virtual void diff(const std::byte* old, const std::byte* now, std::uint64_t n, std::vector<Run>& out) = 0;

  /// CRC32C (crc32c() of core/Crc32c.hpp) of n bytes of this device's memory, computed on the
  /// device: only a CRC per 64 KiB block and the last partial block's bytes cross to the host.
  /// Throws as reduce().
  virtual std::uint32_t crc32c(const std::byte* p, std::uint64_t n) = 0;
  /// A hint for managed memory ("unified"): migrate [p, +bytes) to this device ahead of device
  /// code that will use it, queued on `stream` (a cudaStream_t of the caller's: nullptr is the
  /// default stream) so that it lands before the work queued after it; or, with to_device false,
  /// back to the host before the host uses it, complete when the call returns (a bulk migration
  /// instead of a page fault per touched page). Device memory (cuda:N) ignores it, and so does a
  /// GPU without concurrent managed access. Throws Error(DeviceUnavailable) naming the CUDA error.
  virtual void prefetch(const std::byte* p, std::uint64_t bytes, bool to_device, void* stream) = 0;
  /// Waits until the device has finished all work queued on it by anyone (other libraries'
  /// streams included), so that memory they wrote reads as written. Throws as reduce().
  virtual void settle() = 0;

  virtual DeviceCounters counters() const = 0;
  virtual DevicePoolStats pool_stats() const = 0;
};

/// The backend of `location` ("cuda:N" or "unified" on device 0), created on first use and kept
/// for the process. Throws Error(InvalidArgument) for a malformed location and
/// Error(DeviceUnavailable) naming the reason (no CUDA in this build, no driver or GPU, ordinal
/// out of range) when it cannot be served.
DeviceBackend& device_backend(std::string_view location);

/// Tests only: serve "cuda:0" .. "cuda:<count-1>" and "unified" from host-memory emulations (and
/// no real device) until called again; 0 goes back to the real devices. Backends of the previous
/// setting stay alive (pages may still hold their blocks). Not to be called while another thread
/// creates device pages.
void emulate_devices(int count);
/// Number of emulated devices now served (0: real devices).
int emulated_devices() noexcept;
/// Tests only: the `nth` host-to-device write from now on any emulated device (1: the next one)
/// throws Error(DeviceUnavailable) before moving a byte, as a failing CUDA call would; 0 disarms.
/// Thread-safe.
void fail_emulated_write(std::uint64_t nth) noexcept;

/// Working space of resolve_overlaps (its content is lost between calls). A caller that keeps one
/// saves allocating, and faulting in, buffers as large as `runs` on every call.
struct OverlapScratch {
  std::vector<DeviceRun> sorted, spare;
  std::vector<std::uint64_t> granules;  // a bit per 64-byte granule, region after region
  std::vector<std::pair<std::uint64_t, std::uint64_t>> regions;  // hash table: region -> first word
};

/// Rewrites `runs` (in the order they were issued: a later run wins where runs overlap) into runs
/// that do not overlap and leave the same bytes on the device: each byte is written once, from the
/// last run that covers it. Zero-length runs are dropped. What it costs:
///   - runs already sorted by address and disjoint: one pass, kept as they are;
///   - runs of which no two touch the same 64-byte granule (the usual batch: rows of whole cache
///     lines, or rows on different pages), when the 256 KiB regions they touch are at most about
///     one for every 64 runs: two passes and a bitmap per region touched, kept in their order;
///   - other disjoint runs: one radix sort (linear in the runs), result sorted by address;
///   - runs whose only overlaps are repeats (same address and length): that sort and a pass
///     keeping each repeat's last run, result sorted;
///   - overlapping runs: a sweep over their sorted boundaries, O(n log n), result sorted.
/// Returns the bytes the resulting runs hold. The one-argument form uses a fresh scratch.
std::uint64_t resolve_overlaps(std::vector<DeviceRun>& runs, OverlapScratch& scratch);
std::uint64_t resolve_overlaps(std::vector<DeviceRun>& runs);

}  // namespace mmsb::cuda
