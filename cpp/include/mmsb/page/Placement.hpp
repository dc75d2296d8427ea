#pragma once
/// Placement: memory for pages that do not live in the host arena (device or managed memory).
/// The page layer knows nothing of devices; the engine implements this over its device backends
/// and registers one per location with PageTable::add_placement. A page's PageRecord::place names
/// its placement (0: the host arena).
///
/// Thread safety: release() may be called from any thread (whoever drops a deleted page's last
/// pin); the rest under the table's owner lock.
#include <cstdint>
#include <span>
#include <string>

#include "mmsb/page/Arena.hpp"

namespace mmsb {

class Placement {
 public:
  virtual ~Placement() = default;
  /// The location pages placed here report ("cuda:0", "unified").
  virtual const std::string& location() const noexcept = 0;
  /// A zero-filled block of at least `bytes`; Error(OutOfMemory / DeviceUnavailable), nothing
  /// allocated then.
  virtual Arena::Block allocate(std::uint64_t bytes) = 0;
  virtual void release(const Arena::Block& block) noexcept = 0;
  /// Copies host bytes to the start of a block this placement allocated.
  virtual void store(std::byte* dst, std::span<const std::byte> src) = 0;
};

}  // namespace mmsb
