// The loopback channel: a one-rank replicator over an emulated device (emulate_devices()). With
// one rank every collective is the identity, so what is tested is the Replicator's own logic;
// the batch reaches the pages only through the backend's write(), whose emulation stores bytes
// inverted, so a row applied any other way shows up as garbage.
#include <algorithm>

#include "ReplicaChannel.hpp"

namespace mmsb::cuda {
namespace {

class LoopbackChannel final : public ReplicaChannel {
 public:
  explicit LoopbackChannel(DeviceBackend& backend) : backend_(backend) {}

  void broadcast(std::span<std::byte>) override {}

  std::span<std::byte> stage(std::uint64_t bytes) override {
    if (stage_.size() < bytes) stage_.resize(bytes);
    return stage_;
  }

  // The emulated device's "device body" is host memory: the pages are reached through write().
  void load_body(std::uint64_t bytes) override { body_.assign(stage_.begin(), stage_.begin() + bytes); }

  void fetch_body(std::uint64_t bytes) override {
    stage(bytes);
    std::copy_n(body_.begin(), bytes, stage_.begin());
  }

  void apply(std::span<const DeviceRun> runs) override { backend_.write(runs, body_); }

  std::vector<std::uint64_t> all_gather(std::uint64_t value) override { return {value}; }

 private:
  DeviceBackend& backend_;
  std::vector<std::byte> stage_;
  std::vector<std::byte> body_;
};

}  // namespace

std::unique_ptr<ReplicaChannel> make_loopback_channel(DeviceBackend& backend) {
  return std::make_unique<LoopbackChannel>(backend);
}

}  // namespace mmsb::cuda
