// The loopback channel: replicators over emulated devices (emulate_devices()), one thread per rank
// in this process, joined into an in-process group by their unique id. Collectives are exchanges
// through the group, matched by call order as NCCL matches them, so the whole protocol (header,
// body, the receivers' checks, the hash check) runs on machines without a GPU or NCCL. The batch
// reaches the pages only through the backend's write(), whose emulation stores bytes inverted,
// so a row applied any other way shows up as garbage.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "ReplicaChannel.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Replicator.hpp"

namespace mmsb::cuda {
namespace {

using Part = std::vector<std::byte>;

std::atomic<std::int64_t> g_timeout_ms{60'000};

// The ranks of one id. Collective k of every rank is exchange round k: each rank puts in its
// part and, once all have, takes every part in rank order; the round is dropped when the last
// rank has taken them.
class Group {
 public:
  explicit Group(int nranks) : nranks_(nranks), joined_(static_cast<std::size_t>(nranks), false) {}

  int nranks() const noexcept { return nranks_; }

  void join(int rank) {
    std::lock_guard g(mutex_);
    if (joined_[static_cast<std::size_t>(rank)]) {
      fail(ErrorCode::InvalidArgument, "Replicator: rank ", rank, " of this unique id has joined already");
    }
    joined_[static_cast<std::size_t>(rank)] = true;
  }

  std::vector<Part> exchange(int rank, std::uint64_t round, Part mine, std::chrono::milliseconds timeout) {
    std::unique_lock g(mutex_);
    Round& r = rounds_[round];
    if (r.parts.empty()) r.parts.resize(static_cast<std::size_t>(nranks_));
    r.parts[static_cast<std::size_t>(rank)] = std::move(mine);
    if (++r.in == nranks_) cv_.notify_all();
    if (!cv_.wait_for(g, timeout, [&] { return r.in == nranks_; })) {
      fail(ErrorCode::DeviceUnavailable, "emulated replication: rank ", rank, " waited ", timeout.count(),
           " ms in collective ", round, " for ranks that never came (", r.in, " of ", nranks_, " arrived)");
    }
    std::vector<Part> all = r.parts;
    if (++r.out == nranks_) rounds_.erase(round);
    return all;
  }

 private:
  struct Round {
    std::vector<Part> parts;
    int in = 0;
    int out = 0;
  };
  const int nranks_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<bool> joined_;
  std::map<std::uint64_t, Round> rounds_;
};

// Live groups by id; a group goes when its last channel does.
std::shared_ptr<Group> group_of(const NcclUniqueId& id, int nranks) {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<Group>> groups;
  std::lock_guard g(mutex);
  std::erase_if(groups, [](const auto& kv) { return kv.second.expired(); });
  auto& slot = groups[std::string(id.internal, sizeof id.internal)];
  std::shared_ptr<Group> group = slot.lock();
  if (!group) {
    group = std::make_shared<Group>(nranks);
    slot = group;
  } else if (group->nranks() != nranks) {
    fail(ErrorCode::InvalidArgument, "Replicator: this unique id's group has ", group->nranks(),
         " ranks, but this rank was told ", nranks);
  }
  return group;
}

class LoopbackChannel final : public ReplicaChannel {
 public:
  LoopbackChannel(DeviceBackend& backend, int nranks, int rank, const NcclUniqueId& id)
      : backend_(backend), rank_(rank), timeout_(emulated_collective_timeout()) {
    if (nranks > 1) {
      group_ = group_of(id, nranks);
      group_->join(rank);
    }
  }

  void broadcast(std::span<std::byte> bytes) override {
    const Part root = from_root(bytes);
    if (root.size() != bytes.size()) {
      fail(ErrorCode::Internal, "emulated replication: rank 0 broadcast ", root.size(), " bytes, rank ", rank_,
           " expected ", bytes.size());
    }
    std::copy(root.begin(), root.end(), bytes.begin());
  }

  std::span<std::byte> stage(std::uint64_t bytes) override {
    if (stage_.size() < bytes) stage_.resize(bytes);
    return stage_;
  }

  // The emulated device's "device body" is host memory: the pages are reached through write().
  void load_body(std::uint64_t bytes) override {
    body_ = from_root(std::span(stage_).first(rank_ == 0 ? bytes : 0));
    if (body_.size() != bytes) {
      fail(ErrorCode::Internal, "emulated replication: rank 0 sent a body of ", body_.size(), " bytes, rank ",
           rank_, " expected ", bytes);
    }
  }

  void fetch_body(std::uint64_t bytes) override {
    stage(bytes);
    std::copy_n(body_.begin(), bytes, stage_.begin());
  }

  void apply(std::span<const DeviceRun> runs) override { backend_.write(runs, body_); }

  std::vector<std::uint64_t> all_gather(std::uint64_t value) override {
    if (!group_) return {value};
    Part mine(sizeof value);
    std::memcpy(mine.data(), &value, sizeof value);
    std::vector<std::uint64_t> out;
    for (const Part& p : group_->exchange(rank_, round_++, std::move(mine), timeout_)) {
      std::uint64_t v = 0;
      std::memcpy(&v, p.data(), std::min(p.size(), sizeof v));
      out.push_back(v);
    }
    return out;
  }

 private:
  // Rank 0's `bytes` on every rank (the other ranks' `bytes` are not sent).
  Part from_root(std::span<const std::byte> bytes) {
    Part mine(bytes.begin(), bytes.end());
    if (!group_) return mine;
    if (rank_ != 0) mine.clear();
    return std::move(group_->exchange(rank_, round_++, std::move(mine), timeout_).front());
  }

  DeviceBackend& backend_;
  const int rank_;
  const std::chrono::milliseconds timeout_;
  std::shared_ptr<Group> group_;  // none for a group of one
  std::uint64_t round_ = 0;
  Part stage_;
  Part body_;
};

}  // namespace

std::unique_ptr<ReplicaChannel> make_loopback_channel(DeviceBackend& backend, int nranks, int rank,
                                                      const NcclUniqueId& id) {
  return std::make_unique<LoopbackChannel>(backend, nranks, rank, id);
}

void set_emulated_collective_timeout(std::chrono::milliseconds timeout) noexcept {
  g_timeout_ms.store(timeout.count(), std::memory_order_relaxed);
}

std::chrono::milliseconds emulated_collective_timeout() noexcept {
  return std::chrono::milliseconds(g_timeout_ms.load(std::memory_order_relaxed));
}

}  // namespace mmsb::cuda
