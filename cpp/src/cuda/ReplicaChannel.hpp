#pragma once
// What a Replicator needs from the ranks and the device, behind one interface so that the batch
// logic (validation, packing, overlap resolution, hashing) is host code built everywhere:
//  - the NCCL channel (NcclChannel.cpp): one communicator and one stream on the replica's device;
//  - the loopback channel (ReplicaLoopback.cpp): ranks on emulated devices (emulate_devices()),
//    one thread each in one process, so the protocol is tested on machines without a GPU or NCCL.
// Builds without NCCL support get a make_nccl_channel that refuses (Replicator.cpp).
//
// Collectives are matched across ranks by call order: every rank makes the same calls in the same
// order. A call returns once its work is complete on the device (stream synchronized).
// Thread safety: none; the Replicator serializes its calls.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/cuda/Nccl.hpp"

namespace mmsb::cuda {

class ReplicaChannel {
 public:
  virtual ~ReplicaChannel() = default;

  /// Rank 0's `bytes` replace every other rank's (host memory; a few hundred bytes at most).
  virtual void broadcast(std::span<std::byte> bytes) = 0;
  /// Host staging of at least `bytes`, valid until the next stage() call: rank 0 packs a batch
  /// body into it; the other ranks read the body's row table from it after fetch_body().
  virtual std::span<std::byte> stage(std::uint64_t bytes) = 0;
  /// Rank 0's staged body [0, bytes) becomes every rank's device body.
  virtual void load_body(std::uint64_t bytes) = 0;
  /// Device body [0, bytes) -> stage()[0, bytes), on this rank only.
  virtual void fetch_body(std::uint64_t bytes) = 0;
  /// For each run, device body [host_offset, +length) -> `device`; destinations are disjoint.
  virtual void apply(std::span<const DeviceRun> runs) = 0;
  /// Every rank's `value`, in rank order.
  virtual std::vector<std::uint64_t> all_gather(std::uint64_t value) = 0;
};

/// The NCCL channel of rank `rank` of `nranks` on `backend`'s device; blocks until every rank
/// has joined. Throws Error(DeviceUnavailable) naming the reason (no NCCL support in this build,
/// libnccl not loadable, the communicator could not be created).
std::unique_ptr<ReplicaChannel> make_nccl_channel(int nranks, int rank, const NcclUniqueId& id,
                                                  DeviceBackend& backend);
/// The loopback channel of rank `rank` of `nranks` on an emulated device: ranks of one `id` in
/// this process (one thread each) form a group whose collectives are in-process exchanges, each
/// waiting at most emulated_collective_timeout() for the other ranks, then throwing
/// Error(DeviceUnavailable). Throws Error(InvalidArgument) when the id's group has another rank
/// count or this rank joined it already.
std::unique_ptr<ReplicaChannel> make_loopback_channel(DeviceBackend& backend, int nranks, int rank,
                                                      const NcclUniqueId& id);

}  // namespace mmsb::cuda
