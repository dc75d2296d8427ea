// The NCCL channel of a Replicator: one communicator and one non-blocking stream on the replica's
// device. Device buffers come from the device's pool, host staging is pinned, and a received
// batch is applied by the run-copy kernel straight from the buffer NCCL received it into.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "CudaCheck.hpp"
#include "ReplicaChannel.hpp"
#include "RunCopy.hpp"

namespace mmsb::cuda {
namespace {

// Waiting polls the stream (and NCCL's error state) this many times before sleeping between polls:
// short collectives return fast, while a rank idling for the next tick does not burn a core.
constexpr int kSpinPolls = 1000;
constexpr auto kPollSleep = std::chrono::microseconds(50);

// Pinned host memory, grown by doubling; contents are not kept when it grows.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { cudaFreeHost(data_); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  std::span<std::byte> reserve(std::uint64_t bytes, const std::string& where) {
    if (bytes > size_) {
      const std::uint64_t size = std::max(bytes, 2 * size_);
      cudaFreeHost(data_);
      data_ = nullptr;
      size_ = 0;
      void* p = nullptr;
      check(cudaMallocHost(&p, size), where, "cudaMallocHost");
      data_ = static_cast<std::byte*>(p);
      size_ = size;
    }
    return {data_, size_};
  }
  std::byte* data() const noexcept { return data_; }

 private:
  std::byte* data_ = nullptr;
  std::uint64_t size_ = 0;
};

// A block of the device's pool, grown by doubling; contents are not kept when it grows.
class PoolBuffer {
 public:
  explicit PoolBuffer(DeviceBackend& backend) : backend_(backend) {}
  ~PoolBuffer() { give_back(); }
  PoolBuffer(const PoolBuffer&) = delete;
  PoolBuffer& operator=(const PoolBuffer&) = delete;

  std::byte* reserve(std::uint64_t bytes) {
    if (bytes > block_.requested) {
      const std::uint64_t size = std::max(bytes, 2 * block_.requested);
      give_back();
      block_ = backend_.allocate(size);
    }
    return block_.data;
  }

 private:
  void give_back() noexcept {
    if (block_.data != nullptr) backend_.release(block_);
    block_ = {};
  }

  DeviceBackend& backend_;
  DevicePool::Block block_;
};

class NcclChannel final : public ReplicaChannel {
 public:
  NcclChannel(int nranks, int rank, const NcclUniqueId& id, DeviceBackend& backend)
      : nccl_(nccl_library()),
        ordinal_(backend.ordinal()),
        nranks_(nranks),
        rank_(rank),
        where_("NCCL replica rank " + std::to_string(rank) + " of " + std::to_string(nranks) + " on " +
               backend.location()),
        scratch_(backend),
        body_(backend),
        table_(backend) {
    DeviceGuard g(ordinal_, where_);
    try {
      check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), where_, "cudaStreamCreateWithFlags");
      // Blocks until every rank has called it with the same id.
      nccl_.check(nccl_.comm_init_rank(&comm_, nranks, id, rank), where_ + ": ncclCommInitRank");
    } catch (...) {
      close();
      throw;
    }
  }

  ~NcclChannel() override { close(); }

  void broadcast(std::span<std::byte> bytes) override {
    DeviceGuard g(ordinal_, where_);
    std::byte* d = scratch_.reserve(bytes.size());
    if (rank_ == 0) copy(d, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
    nccl_.check(nccl_.broadcast(d, d, bytes.size(), NcclDataType::Uint8, 0, comm_, stream_),
                where_ + ": ncclBroadcast (header)");
    wait();
    if (rank_ != 0) {
      copy(bytes.data(), d, bytes.size(), cudaMemcpyDeviceToHost);
      wait();
    }
  }

  std::span<std::byte> stage(std::uint64_t bytes) override { return stage_.reserve(bytes, where_); }

  void load_body(std::uint64_t bytes) override {
    if (bytes == 0) return;  // every rank knows the size from the header: all skip together
    DeviceGuard g(ordinal_, where_);
    body_data_ = body_.reserve(bytes);
    if (rank_ == 0) copy(body_data_, stage_.data(), bytes, cudaMemcpyHostToDevice);
    nccl_.check(nccl_.broadcast(body_data_, body_data_, bytes, NcclDataType::Uint8, 0, comm_, stream_),
                where_ + ": ncclBroadcast (batch)");
    wait();
  }

  void fetch_body(std::uint64_t bytes) override {
    if (bytes == 0) return;
    DeviceGuard g(ordinal_, where_);
    copy(stage(bytes).data(), body_data_, bytes, cudaMemcpyDeviceToHost);
    wait();
  }

  void apply(std::span<const DeviceRun> runs) override {
    // Long runs are cut into pieces, as the kernel expects (RunCopy.hpp).
    std::uint64_t pieces = 0;
    std::uint64_t total = 0;
    for (const DeviceRun& r : runs) {
      pieces += (r.length + kRunCopyPieceBytes - 1) / kRunCopyPieceBytes;
      total += r.length;
    }
    if (pieces == 0) return;
    DeviceGuard g(ordinal_, where_);
    const std::uint64_t table_bytes = pieces * sizeof(DeviceCopyRun);
    auto* host = reinterpret_cast<DeviceCopyRun*>(table_host_.reserve(table_bytes, where_).data());
    std::uint64_t k = 0;
    for (const DeviceRun& r : runs) {
      for (std::uint64_t done = 0; done < r.length; done += kRunCopyPieceBytes) {
        host[k++] = {r.device + done, body_data_ + r.host_offset + done, std::min(kRunCopyPieceBytes, r.length - done)};
      }
    }
    auto* table = reinterpret_cast<DeviceCopyRun*>(table_.reserve(table_bytes));
    copy(table, host, table_bytes, cudaMemcpyHostToDevice);
    check(launch_run_copy(table, pieces, total, stream_), where_, "launch_run_copy");
    wait();
  }

  std::vector<std::uint64_t> all_gather(std::uint64_t value) override {
    DeviceGuard g(ordinal_, where_);
    constexpr std::size_t kWord = sizeof(std::uint64_t);
    std::byte* send = scratch_.reserve(kWord * (nranks_ + 1));
    std::byte* recv = send + kWord;
    copy(send, &value, kWord, cudaMemcpyHostToDevice);
    nccl_.check(nccl_.all_gather(send, recv, kWord, NcclDataType::Uint8, comm_, stream_), where_ + ": ncclAllGather");
    wait();
    std::vector<std::uint64_t> all(nranks_);
    copy(all.data(), recv, kWord * all.size(), cudaMemcpyDeviceToHost);
    wait();
    return all;
  }

 private:
  void copy(void* dst, const void* src, std::uint64_t bytes, cudaMemcpyKind kind) {
    check(cudaMemcpyAsync(dst, src, bytes, kind, stream_), where_, "cudaMemcpyAsync");
  }

  // Until the stream is idle. A collective whose peer failed never completes, so NCCL's error
  // state is polled too: on an error the communicator is aborted (which ends the collective) and
  // the error thrown.
  void wait() {
    for (int polls = 0;;) {
      const cudaError_t s = cudaStreamQuery(stream_);
      if (s == cudaSuccess) return;
      if (s != cudaErrorNotReady) check(s, where_, "cudaStreamQuery");
      NcclResult async = NcclResult::Success;
      const NcclResult queried = nccl_.comm_get_async_error(comm_, &async);
      if (queried != NcclResult::Success) nccl_.check(queried, where_ + ": ncclCommGetAsyncError");
      if (async != NcclResult::Success && async != NcclResult::InProgress) {
        nccl_.comm_abort(comm_);
        comm_ = nullptr;
        nccl_.check(async, where_ + ": a collective");
      }
      if (polls < kSpinPolls) {
        ++polls;
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(kPollSleep);
      }
    }
  }

  // Destroys the communicator and the stream (the buffers go back to the pool after this, in the
  // members' destructors). A collective still pending (a call failed half way) is aborted rather
  // than waited for: its peers may be gone. Never throws: also the constructor's clean-up.
  void close() noexcept {
    int previous = 0;
    const bool switched = cudaGetDevice(&previous) == cudaSuccess && cudaSetDevice(ordinal_) == cudaSuccess;
    if (comm_ != nullptr) {
      const bool idle = stream_ == nullptr || cudaStreamQuery(stream_) == cudaSuccess;
      idle ? nccl_.comm_destroy(comm_) : nccl_.comm_abort(comm_);
    }
    if (stream_ != nullptr) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
    comm_ = nullptr;
    stream_ = nullptr;
    cudaGetLastError();  // a failure here is not the next caller's error
    if (switched) cudaSetDevice(previous);
  }

  const NcclLibrary& nccl_;
  int ordinal_;
  int nranks_;
  int rank_;
  std::string where_;
  PoolBuffer scratch_;  // header and all_gather words
  PoolBuffer body_;     // the batch body, received in place
  PoolBuffer table_;    // the copy table of apply()
  PinnedBuffer stage_;
  PinnedBuffer table_host_;
  std::byte* body_data_ = nullptr;
  cudaStream_t stream_ = nullptr;
  NcclComm comm_ = nullptr;
};

}  // namespace

std::unique_ptr<ReplicaChannel> make_nccl_channel(int nranks, int rank, const NcclUniqueId& id,
                                                  DeviceBackend& backend) {
  return std::make_unique<NcclChannel>(nranks, rank, id, backend);
}

}  // namespace mmsb::cuda
