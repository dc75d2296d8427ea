#pragma once
/// Replicator: keeps replicas of a set of device pages identical on several GPUs, one process (or
/// thread) per rank, by broadcasting each tick's delta batch from rank 0 over NCCL and applying it
/// in the same order on every rank.
///
/// Set-up: rank 0 makes an id with unique_id(); the caller hands it to every rank (a file, a
/// socket, MPI); each rank constructs Replicator(nranks, rank, id, ordinal, page_sizes) with the
/// same page sizes, concurrently (construction is a collective). Each tick, rank 0 calls
/// broadcast(rows, payload) and every other rank calls receive(); all end with the batch applied.
/// Every collective (constructor, broadcast/receive, check) must be called by all ranks in the
/// same order, or they wait for each other forever (NCCL semantics).
///
/// Wire protocol per tick (ReplicaWire.hpp, docs/format.md): a 24-byte header, then one body
/// holding the row table and the payload. Rows apply in order (a later row wins where rows
/// overlap), resolved once into disjoint runs and copied by one kernel.
///
/// With emulate_devices() installed, replicators run over emulated devices without NCCL: the
/// ranks of one id are threads of this process, their collectives in-process exchanges (tests of
/// the whole protocol on machines without a GPU). unique_id() then needs no NCCL either.
///
/// Errors: bad arguments throw Error(InvalidArgument) before any collective, leaving every
/// replica unchanged. A CUDA or NCCL failure during a collective throws Error(DeviceUnavailable)
/// and leaves the replicator unusable (ranks may disagree after it): every later call throws
/// DeviceUnavailable quoting the first failure.
///
/// Thread safety: every member may be called from any thread; calls on one object are serialized.
/// Memory: the replicas come from the device's pool (device_backend("cuda:N")) and go back to it
/// in the destructor.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/cuda/Nccl.hpp"
#include "mmsb/cuda/ReplicaWire.hpp"

namespace mmsb::cuda {

class ReplicaChannel;

/// Tests only: how long a collective of emulated replicators waits for the other ranks of its
/// group before it throws Error(DeviceUnavailable) (default 60 s; NCCL would wait forever).
/// Applies to channels made afterwards. Thread-safe.
void set_emulated_collective_timeout(std::chrono::milliseconds timeout) noexcept;
std::chrono::milliseconds emulated_collective_timeout() noexcept;

class Replicator {
 public:
  /// A new bootstrap id (ncclGetUniqueId), made once on rank 0 and shared by the caller; with
  /// devices emulated, 128 random bytes. Throws Error(DeviceUnavailable) when NCCL cannot be
  /// loaded or refuses.
  static NcclUniqueId unique_id();

  /// Joins the replication group as `rank` of `nranks` on CUDA device `ordinal`, with replicas of
  /// `page_sizes` (bytes each, all zero at first). Blocks until every rank has joined. Throws
  /// Error(InvalidArgument) for nranks < 1, rank outside [0, nranks), ordinal < 0, no pages, a
  /// page of 0 bytes, or page sizes that differ between ranks (every rank throws then);
  /// Error(DeviceUnavailable) when the device or NCCL is unavailable (always in builds without
  /// CUDA, unless devices are emulated); Error(OutOfMemory) when the replicas do not fit.
  Replicator(int nranks, int rank, const NcclUniqueId& id, int ordinal, std::vector<std::uint64_t> page_sizes);
  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;
  /// Leaves the group (the communicator is destroyed) and releases the replicas.
  ~Replicator();

  /// Rank 0: sends this tick's rows and `payload` (their bytes, concatenated in row order) to
  /// every rank and applies them to its own replicas. Throws Error(InvalidArgument), nothing sent,
  /// when called on another rank, for a page index out of range, a row past its page's end, or
  /// payload bytes that are not the sum of the row lengths.
  void broadcast(std::span<const ReplicaRow> rows, std::span<const std::byte> payload);
  /// Other ranks: receives rank 0's next batch and applies it. Throws Error(InvalidArgument) on
  /// rank 0 (nothing received); Error(Internal) when the received batch is malformed.
  void receive();

  /// 64-bit hash of all replicas: FNV-1a 64 over, for each page in order, its size (u64 little
  /// endian) and the CRC32C of its bytes (u32 little endian). Equal replicas give equal hashes.
  /// Local: no collective. The CRCs are computed on the device (DeviceBackend::crc32c): a CRC per
  /// 64 KiB block crosses to the host, not the replicas.
  std::uint64_t hash();
  /// Collective: true when every rank's hash() equals rank 0's.
  bool check();
  /// A copy of replica page `page`. Throws Error(InvalidArgument) for an index out of range.
  std::vector<std::byte> read(std::uint64_t page);

  int nranks() const noexcept { return nranks_; }
  int rank() const noexcept { return rank_; }
  int ordinal() const noexcept { return ordinal_; }
  const std::vector<std::uint64_t>& page_sizes() const noexcept { return page_sizes_; }
  /// Batches applied so far (the tick number of the last one).
  std::uint64_t ticks() const;

  /// Marks the replicator as fed by `owner` (a bus, Bus::replicate): true when it was free or
  /// already `owner`'s. One bus only: the replicas follow its pages, and a second bus's ticks
  /// would overwrite them with other pages' rows. Counted: each attach that returned true takes
  /// one detach(owner). Thread-safe.
  bool attach(const void* owner);
  void detach(const void* owner) noexcept;
  /// Whether a bus feeds it (attach without its detach). Thread-safe.
  bool attached() const;

 private:
  void ensure_usable() const;
  void run_batch(std::span<const ReplicaRow> rows, std::span<const std::byte> payload);
  std::uint64_t hash_locked();
  void release_pages() noexcept;

  int nranks_;
  int rank_;
  int ordinal_;
  std::vector<std::uint64_t> page_sizes_;
  DeviceBackend* backend_ = nullptr;
  std::vector<DevicePool::Block> pages_;
  std::vector<std::byte*> page_data_;  // pages_[i].data: the replica addresses wire_runs maps rows to
  std::unique_ptr<ReplicaChannel> channel_;
  mutable std::mutex mutex_;
  std::uint64_t ticks_ = 0;
  std::string failure_;  // the first collective failure; non-empty: unusable
  const void* owner_ = nullptr;  // the bus feeding it (attach), while attached_ > 0
  std::uint64_t attached_ = 0;
};

}  // namespace mmsb::cuda
