// The device backend of one GPU ("cuda:N"; managed memory, "unified", is UnifiedBackend.cpp).
//
// cuda:N moves every transfer through one staging buffer pair (pinned host + device, grown on
// demand up to kStagingCapBytes): a write packs the runs' payload and a table of copies into pinned
// memory, sends both with ONE host-to-device copy and scatters them with ONE run-copy kernel; a
// read gathers the runs into device staging with one kernel and brings them back with one copy.
// So a batch of a million 64-byte deltas costs two commands on the stream, not a million.
#include <algorithm>
#include <cstring>
#include <mutex>

#include "Backends.hpp"
#include "CudaCheck.hpp"
#include "CudaSupport.hpp"
#include "DeviceCompute.hpp"
#include "MaskStretch.hpp"
#include "RunCopy.hpp"
#include "mmsb/core/Crc32c.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/delta/Diff.hpp"
#include "mmsb/cuda/StagingPlan.hpp"
#include "mmsb/parallel/ThreadPool.hpp"

namespace mmsb::cuda {
namespace {

// Pieces a packer lane takes at least: fewer in all and one thread packs alone, as starting the
// lanes would cost more than the copies.
constexpr std::size_t kPiecesPerLane = std::size_t{1} << 16;
// Staging grows in steps of at least this much, so small transfers do not reallocate often.
constexpr std::uint64_t kStagingStep = std::uint64_t{1} << 20;

using Piece = StagingPlan::Piece;

constexpr std::uint64_t round_up(std::uint64_t n, std::uint64_t to) { return (n + to - 1) / to * to; }

// Scratch device memory from the pool for the length of a call.
class PoolLease {
 public:
  PoolLease(DevicePool& pool, std::uint64_t bytes) : pool_(pool), block_(pool.allocate(bytes)) {}
  ~PoolLease() { pool_.release(block_); }
  PoolLease(const PoolLease&) = delete;
  PoolLease& operator=(const PoolLease&) = delete;
  std::byte* data() const noexcept { return block_.data; }

 private:
  DevicePool& pool_;
  DevicePool::Block block_;
};

// A non-blocking stream of one device, destroyed with its owner.
class Stream {
 public:
  Stream(int ordinal, const std::string& where) {
    DeviceGuard g(ordinal, where);
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), where, "cudaStreamCreateWithFlags");
  }
  ~Stream() { cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const noexcept { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// Pool slabs: cudaMalloc'd on `ordinal` (nullptr when the device is out of memory), zeroed on
// `stream` before they are handed out. Callable from any thread: each call selects the device.
SlabSource device_slab_source(int ordinal, const std::string& where, cudaStream_t stream) {
  return {where,
          [ordinal, where](std::size_t n) -> void* {
            DeviceGuard g(ordinal, where);
            void* p = nullptr;
            const cudaError_t s = cudaMalloc(&p, n);
            if (s == cudaErrorMemoryAllocation) {
              cudaGetLastError();
              return nullptr;
            }
            check(s, where, "cudaMalloc");
            return p;
          },
          [ordinal, where, stream](void* p, std::size_t n) {
            DeviceGuard g(ordinal, where);
            check(cudaMemsetAsync(p, 0, n, stream), where, "cudaMemsetAsync");
            check(cudaStreamSynchronize(stream), where, "cudaStreamSynchronize");
          },
          [ordinal](void* p) { free_on(ordinal, p); }};
}

class CudaBackend final : public DeviceBackend {
 public:
  explicit CudaBackend(int ordinal)
      : location_("cuda:" + std::to_string(ordinal)),
        ordinal_(ordinal),
        stream_(ordinal, location_),
        pool_(device_slab_source(ordinal, location_, stream_.get())) {}

  ~CudaBackend() override {
    cudaFreeHost(host_staging_);
    free_on(ordinal_, device_staging_);
  }

  const std::string& location() const noexcept override { return location_; }
  int ordinal() const noexcept override { return ordinal_; }
  bool host_accessible() const noexcept override { return false; }
  bool emulated() const noexcept override { return false; }

  DevicePool::Block allocate(std::uint64_t bytes) override { return pool_.allocate(bytes); }
  void release(const DevicePool::Block& block) noexcept override { pool_.release(block); }

  void write(std::span<const DeviceRun> runs, std::span<const std::byte> host) override {
    const std::uint64_t bytes = checked_bytes(runs, host.size(), location_, "write");
    std::lock_guard g(transfer_mutex_);
    const std::uint64_t kernels = transfer(runs, bytes, [&](std::span<const Piece> pieces, std::uint64_t table_at) {
      DeviceCopyRun* table = staged_table(table_at);
      for_pieces(pieces, [&](std::size_t i) {
        const Piece& p = pieces[i];
        std::memcpy(host_staging_ + p.staging, host.data() + p.host, p.length);
        table[i] = {p.device, device_staging_ + p.staging, p.length};
      });
      // Payload and table in one copy, then one scatter.
      check(cudaMemcpyAsync(device_staging_, host_staging_, table_at + pieces.size() * sizeof(DeviceCopyRun),
                            cudaMemcpyHostToDevice, stream_.get()),
            location_, "cudaMemcpyAsync (host to device)");
      launch(table_at, pieces);
      check(cudaStreamSynchronize(stream_.get()), location_, "cudaStreamSynchronize");
    });
    count(bytes, 0, 0, kernels);
  }

  void read(std::span<const DeviceRun> runs, std::span<std::byte> host) override {
    const std::uint64_t bytes = checked_bytes(runs, host.size(), location_, "read");
    std::lock_guard g(transfer_mutex_);
    const std::uint64_t kernels = transfer(runs, bytes, [&](std::span<const Piece> pieces, std::uint64_t table_at) {
      DeviceCopyRun* table = staged_table(table_at);
      for (const Piece& p : pieces) *table++ = {device_staging_ + p.staging, p.device, p.length};
      check(cudaMemcpyAsync(device_staging_ + table_at, host_staging_ + table_at,
                            pieces.size() * sizeof(DeviceCopyRun), cudaMemcpyHostToDevice, stream_.get()),
            location_, "cudaMemcpyAsync (copy table to device)");
      launch(table_at, pieces);
      check(cudaMemcpyAsync(host_staging_, device_staging_, table_at, cudaMemcpyDeviceToHost, stream_.get()),
            location_, "cudaMemcpyAsync (device to host)");
      check(cudaStreamSynchronize(stream_.get()), location_, "cudaStreamSynchronize");
      for_pieces(pieces, [&](std::size_t i) {
        const Piece& p = pieces[i];
        std::memcpy(host.data() + p.host, host_staging_ + p.staging, p.length);
      });
    });
    count(0, bytes, 0, kernels);
  }

  void copy(std::byte* dst, const std::byte* src, std::uint64_t bytes) override {
    std::lock_guard g(transfer_mutex_);
    if (bytes > 0) {
      DeviceGuard device(ordinal_, location_);
      check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_.get()), location_,
            "cudaMemcpyAsync (device to device)");
      check(cudaStreamSynchronize(stream_.get()), location_, "cudaStreamSynchronize");
    }
    count(0, 0, bytes, 0);
  }

  // The argument table goes through staging with one copy; one kernel.
  void reduce(SemiringKind s, DType dtype, std::span<const std::byte* const> parents,
              std::span<const double> weights, std::byte* out, std::uint64_t elements) override {
    const bool weighted = !weights.empty();
    const std::uint64_t table = reduce_table_bytes(dtype, parents.size(), weighted);
    if (table > kStagingCapBytes) {
      fail(ErrorCode::InvalidArgument, location_, " reduce: ", parents.size(),
           " parents need a larger argument table than the staging buffer holds");
    }
    std::lock_guard g(transfer_mutex_);
    DeviceGuard device(ordinal_, location_);
    reserve_staging(table);
    if (table > 0) fill_reduce_table(s, dtype, parents, weights, host_staging_);
    drained([&] {
      if (table > 0) {
        check(cudaMemcpyAsync(device_staging_, host_staging_, table, cudaMemcpyHostToDevice, stream_.get()),
              location_, "cudaMemcpyAsync (reduce table to device)");
      }
      check(launch_reduce(s, dtype, device_staging_, parents.size(), weighted, out, elements, stream_.get()),
            location_, "launch_reduce");
      check(cudaStreamSynchronize(stream_.get()), location_, "cudaStreamSynchronize");
    });
    count(table, 0, 0, 1);
  }

  void settle() override {
    DeviceGuard device(ordinal_, location_);
    check(cudaDeviceSynchronize(), location_, "cudaDeviceSynchronize");
  }

  void prefetch(const std::byte*, std::uint64_t, bool, void*) override {}  // device memory stays put

  // A CRC per whole 64 KiB block from the kernel, the last partial block's bytes, joined here.
  std::uint32_t crc32c(const std::byte* p, std::uint64_t n) override {
    const std::uint64_t blocks = n / kCrcBlockBytes;
    const std::uint64_t tail = n - blocks * kCrcBlockBytes;
    std::vector<std::uint32_t> crcs(blocks);
    std::vector<std::byte> tail_bytes(tail);
    const PoolLease scratch(pool_, std::max<std::uint64_t>(blocks, 1) * sizeof(std::uint32_t));
    auto* device_crcs = reinterpret_cast<std::uint32_t*>(scratch.data());
    {
      std::lock_guard g(transfer_mutex_);
      DeviceGuard device(ordinal_, location_);
      drained([&] {
        check(launch_crc32c_blocks(p, blocks, device_crcs, stream_.get()), location_, "launch_crc32c_blocks");
        if (blocks > 0) {
          check(cudaMemcpyAsync(crcs.data(), device_crcs, blocks * sizeof(std::uint32_t), cudaMemcpyDeviceToHost,
                                stream_.get()),
                location_, "cudaMemcpyAsync (block CRCs to host)");
        }
        if (tail > 0) {
          check(cudaMemcpyAsync(tail_bytes.data(), p + blocks * kCrcBlockBytes, tail, cudaMemcpyDeviceToHost,
                                stream_.get()),
                location_, "cudaMemcpyAsync (last block to host)");
        }
        check(cudaStreamSynchronize(stream_.get()), location_, "cudaStreamSynchronize");
      });
    }
    std::uint32_t crc = 0;
    for (const std::uint32_t c : crcs) crc = crc32c_combine(crc, c, kCrcBlockBytes);
    count(0, blocks * sizeof(std::uint32_t) + tail, 0, blocks > 0 ? 1 : 0);
    return mmsb::crc32c(tail_bytes.data(), tail, crc);
  }

  // One kernel writes the mask and the chunk flags into device scratch from the pool; the flags
  // come back, then the mask words of the flagged stretches, each stretch with one copy.
  void diff(const std::byte* old, const std::byte* now, std::uint64_t n, std::vector<Run>& out) override {
    if (n == 0) return;
    const std::uint64_t words = mask_words(n);
    const std::uint64_t chunks = mask_chunks(n);
    const PoolLease scratch(pool_, words * sizeof(std::uint64_t) + chunks);
    auto* mask = reinterpret_cast<std::uint64_t*>(scratch.data());
    auto* flags = reinterpret_cast<std::uint8_t*>(scratch.data() + words * sizeof(std::uint64_t));
    std::vector<std::uint8_t> host_flags(chunks);
    std::vector<MaskStretch> stretches;
    std::vector<std::uint64_t> fetched;
    std::lock_guard g(transfer_mutex_);
    DeviceGuard device(ordinal_, location_);
    drained([&] {
      check(launch_change_mask(old, now, n, mask, flags, stream_.get()), location_, "launch_change_mask");
      check(cudaMemcpyAsync(host_flags.data(), flags, chunks, cudaMemcpyDeviceToHost, stream_.get()), location_,
            "cudaMemcpyAsync (diff flags to host)");
      check(cudaStreamSynchronize(stream_.get()), location_, "cudaStreamSynchronize");
      stretches = mask_stretches(host_flags, n);
      std::uint64_t total = 0;
      for (const MaskStretch& st : stretches) total += st.words;
      fetched.resize(total);
      std::uint64_t* at = fetched.data();
      for (const MaskStretch& st : stretches) {
        check(cudaMemcpyAsync(at, mask + st.first_word, st.words * sizeof(std::uint64_t), cudaMemcpyDeviceToHost,
                              stream_.get()),
              location_, "cudaMemcpyAsync (diff mask to host)");
        at += st.words;
      }
      check(cudaStreamSynchronize(stream_.get()), location_, "cudaStreamSynchronize");
    });
    stretch_runs(stretches, fetched.data(), out);
    count(0, chunks + fetched.size() * sizeof(std::uint64_t), 0, 1);
  }

  DeviceCounters counters() const override {
    std::lock_guard g(counters_mutex_);
    return counters_;
  }
  DevicePoolStats pool_stats() const override { return pool_.stats(); }

 private:
  // Runs `work`, which queues commands on the stream; on an error the stream is drained before
  // the error propagates, so no command still reads or writes the buffers a later call reuses.
  template <class Work>
  void drained(Work&& work) {
    try {
      work();
    } catch (...) {
      cudaStreamSynchronize(stream_.get());
      throw;
    }
  }

  // Runs `round` for each staging round of `runs` (`bytes` in all; zero-length runs contribute
  // nothing) and returns the kernels launched.
  template <class Round>
  std::uint64_t transfer(std::span<const DeviceRun> runs, std::uint64_t bytes, Round&& round) {
    std::uint64_t rounds = 0;
    if (bytes == 0) return rounds;
    DeviceGuard device(ordinal_, location_);
    reserve_staging(std::min(kStagingCapBytes, plan_.bound(runs)));
    drained([&] {
      plan_.plan(runs, staging_bytes_, [&](std::span<const Piece> pieces, std::uint64_t table_at) {
        round(pieces, table_at);
        ++rounds;
      });
    });
    return rounds;
  }

  // Calls fn(i) for every piece index: in lanes of contiguous pieces on the packer threads when
  // there are many (the pinned copies of a million 64-byte rows are host work the GPU waits
  // for), else on this thread. Pieces are disjoint in staging and in the host buffer, so the
  // bytes never depend on the lanes.
  template <class Fn>
  void for_pieces(std::span<const Piece> pieces, Fn&& fn) {
    const std::size_t n = pieces.size();
    const auto lanes = static_cast<unsigned>(std::min<std::size_t>(packers_.threads(), (n + kPiecesPerLane - 1) / kPiecesPerLane));
    if (lanes <= 1) {
      for (std::size_t i = 0; i < n; ++i) fn(i);
      return;
    }
    packers_.run_lanes(lanes, [&](unsigned lane) {
      for (std::size_t i = n * lane / lanes; i < n * (lane + 1) / lanes; ++i) fn(i);
    });
  }

  // Grows both staging buffers to at least `bytes` (never shrinks them).
  void reserve_staging(std::uint64_t bytes) {
    if (bytes <= staging_bytes_) return;
    const std::uint64_t size = std::min(kStagingCapBytes, std::max(round_up(bytes, kStagingStep), 2 * staging_bytes_));
    cudaFreeHost(host_staging_);
    cudaFree(device_staging_);
    host_staging_ = nullptr;
    device_staging_ = nullptr;
    staging_bytes_ = 0;
    void* h = nullptr;
    void* d = nullptr;
    check(cudaMallocHost(&h, size), location_, "cudaMallocHost (pinned staging)");
    host_staging_ = static_cast<std::byte*>(h);
    check(cudaMalloc(&d, size), location_, "cudaMalloc (device staging)");
    device_staging_ = static_cast<std::byte*>(d);
    staging_bytes_ = size;
  }

  // The copy table of a round, written in place in pinned staging (StagingPlan aligns it).
  DeviceCopyRun* staged_table(std::uint64_t table_at) const noexcept {
    return reinterpret_cast<DeviceCopyRun*>(host_staging_ + table_at);
  }

  // The run-copy kernel over the round's table, already in device staging at `table_at`.
  void launch(std::uint64_t table_at, std::span<const Piece> pieces) {
    std::uint64_t bytes = 0;
    for (const Piece& p : pieces) bytes += p.length;
    const auto* table = reinterpret_cast<const DeviceCopyRun*>(device_staging_ + table_at);
    check(launch_run_copy(table, pieces.size(), bytes, stream_.get()), location_, "launch_run_copy");
  }

  void count(std::uint64_t to_device, std::uint64_t to_host, std::uint64_t copied, std::uint64_t kernels) {
    std::lock_guard g(counters_mutex_);
    counters_.add_transfer(to_device, to_host, copied, kernels);
  }

  std::string location_;
  int ordinal_;
  Stream stream_;
  DevicePool pool_;

  std::mutex transfer_mutex_;  // guards the staging buffers and the plan
  std::byte* host_staging_ = nullptr;
  std::byte* device_staging_ = nullptr;
  std::uint64_t staging_bytes_ = 0;
  StagingPlan plan_{kRunCopyPieceBytes};
  ThreadPool packers_;  // one thread per hardware thread, used by for_pieces

  mutable std::mutex counters_mutex_;
  DeviceCounters counters_;
};

}  // namespace

std::unique_ptr<DeviceBackend> make_cuda_backend(int ordinal) {
  const std::string where = "cuda:" + std::to_string(ordinal);
  require_device(ordinal, where);
  return std::make_unique<CudaBackend>(ordinal);
}

}  // namespace mmsb::cuda
