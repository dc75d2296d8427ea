#pragma once
/// Per-page records: the hot 64-byte PageRecord read on every commit, and the cold PageInfo
/// (name, shape, metadata) that only typed or named pages carry.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mmsb/core/Types.hpp"
#include "mmsb/page/DType.hpp"

namespace mmsb {

/// A metadata value: text (Python str) or bytes.
struct MetaValue {
  std::string value;
  bool is_bytes = false;
  bool operator==(const MetaValue&) const = default;
};
using Metadata = std::map<std::string, MetaValue, std::less<>>;

/// Cold, rarely read attributes of a page.
struct PageInfo {
  std::string name;
  std::vector<std::uint64_t> shape;  // empty for raw pages
  Metadata metadata;
  std::string location = "cpu";
};

/// What create_page is asked for.
struct PageSpec {
  std::uint64_t size = 0;
  DType dtype = DType::Raw;
  std::vector<std::uint64_t> shape;  // empty: raw, or 1-D of size/itemsize for typed pages
  std::string name;
  Metadata metadata;
  std::string location = "cpu";
};

/// The hot record of one page: exactly one cache line.
///
/// Invariants: `data` is 64-byte aligned (a device address when `place` names a placement that is
/// not host-accessible: then only that placement touches the bytes) and never moves while the page lives or is pinned;
/// `size` never changes; `epoch` only grows. Writers hold the bus commit lock; `epoch` and
/// `last_lsn` are atomics so readers on other threads (handles, views) see whole values.
/// `refs` counts pins (Python handles, views, DLPack exports) in its low 30 bits; bit 31 marks the
/// page deleted. Whoever brings it to "deleted and unpinned" frees the data, then sets bit 30: from
/// then on nothing touches the record (see PageTable::release_dead_records).
struct alignas(64) PageRecord {
  static constexpr std::uint32_t kDeletedBit = 0x8000'0000u;
  static constexpr std::uint32_t kFreedBit = 0x4000'0000u;
  static constexpr std::uint32_t kPinMask = kFreedBit - 1;

  std::byte* data = nullptr;
  std::uint64_t size = 0;
  std::atomic<Epoch> epoch{0};
  std::atomic<Lsn> last_lsn{0};
  PageId id = 0;
  std::uint64_t requested = 0;     // arena bookkeeping for release
  std::atomic<std::uint32_t> refs{0};
  std::uint16_t size_class = 0;
  DType dtype = DType::Raw;
  std::uint8_t has_info = 0;       // 1 when a PageInfo exists for this id
  std::uint32_t slab = 0;          // arena bookkeeping for release (Arena::Block::slab)
  std::uint8_t place = 0;          // 0: host arena; k: the table's placement k (device memory)

  bool deleted() const noexcept { return (refs.load(std::memory_order_acquire) & kDeletedBit) != 0; }
  bool live() const noexcept { return id != 0 && !deleted(); }
};
static_assert(sizeof(PageRecord) == 64, "hot page metadata must stay one cache line");

}  // namespace mmsb
