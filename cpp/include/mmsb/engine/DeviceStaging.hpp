#pragma once
/// DeviceStaging: device memory holding a copy of a device page, for an edit made on the device
/// (Page.edit on a "cuda:N" page): Bus::stage_on_device fills it with the page's bytes at an
/// epoch, the caller changes it in place with device code (CuPy, PyTorch through DLPack), and
/// Bus::commit_staged diffs it against the page on the device and commits the changed bytes as
/// one delta. Only the change mask and the changed bytes ever cross to the host.
///
/// Ownership: the staging owns its block and gives it back to the device when destroyed, which
/// may happen on any thread (a DLPack consumer's deleter) and after its bus closed. The backend
/// outlives it (device backends live as long as the process). Not copyable.
#include <cstdint>

#include "mmsb/core/Types.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"

namespace mmsb {

class DeviceStaging {
 public:
  DeviceStaging(cuda::DeviceBackend& backend, cuda::DevicePool::Block block, PageId page, Epoch epoch,
                std::uint8_t place, std::uint64_t size) noexcept
      : backend_(backend), block_(block), page_(page), epoch_(epoch), place_(place), size_(size) {}
  ~DeviceStaging() { backend_.release(block_); }
  DeviceStaging(const DeviceStaging&) = delete;
  DeviceStaging& operator=(const DeviceStaging&) = delete;

  /// Device address of the copy (size() bytes, 256-byte aligned).
  std::byte* data() const noexcept { return block_.data; }
  std::uint64_t size() const noexcept { return size_; }
  /// The page it copies, and the page's epoch when it was copied.
  PageId page() const noexcept { return page_; }
  Epoch epoch() const noexcept { return epoch_; }
  /// The page table place the page lived at (a move since then refuses the commit).
  std::uint8_t place() const noexcept { return place_; }
  cuda::DeviceBackend& backend() const noexcept { return backend_; }

 private:
  cuda::DeviceBackend& backend_;
  cuda::DevicePool::Block block_;
  PageId page_;
  Epoch epoch_;
  std::uint8_t place_;
  std::uint64_t size_;
};

}  // namespace mmsb
