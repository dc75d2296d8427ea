#pragma once
/// Columnar batches of single-run deltas: row i writes lengths[i] bytes at offsets[i] of page
/// page_ids[i]; payload holds the rows' bytes back to back. Each row is one delta (one lsn, +1
/// epoch on its page), applied in row order per page.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "mmsb/core/Types.hpp"

namespace mmsb {

/// Non-owning view of a batch. The caller keeps the columns alive and unchanged while it is used.
struct DeltaBatchView {
  std::span<const PageId> page_ids;
  std::span<const std::uint64_t> offsets;
  std::span<const std::uint64_t> lengths;
  std::span<const std::byte> payload;

  std::size_t rows() const noexcept { return page_ids.size(); }
  /// Checks the columns agree with each other (same row count, lengths sum to the payload size,
  /// no offset+length overflow). Throws Error(InvalidDelta) naming the first bad row. Checks
  /// against pages (existence, bounds) are done by the bus before anything is applied.
  void check_shape() const;
};

/// Owning batch built row by row (C++ users, tests, benchmarks).
class DeltaBatch {
 public:
  void add(PageId page, std::uint64_t offset, std::span<const std::byte> data);
  /// Appends the rows of another batch (checked by the caller; the columns are copied).
  void append(const DeltaBatchView& rows);
  void reserve(std::size_t rows, std::size_t payload_bytes);
  /// Bytes held by the columns (capacity).
  std::size_t capacity_bytes() const noexcept {
    return page_ids_.capacity() * sizeof(PageId) + (offsets_.capacity() + lengths_.capacity()) * 8 + payload_.capacity();
  }
  /// Gives the columns' memory back.
  void release() noexcept { *this = DeltaBatch(); }
  void clear() noexcept;
  std::size_t rows() const noexcept { return page_ids_.size(); }
  DeltaBatchView view() const noexcept { return {page_ids_, offsets_, lengths_, payload_}; }

 private:
  std::vector<PageId> page_ids_;
  std::vector<std::uint64_t> offsets_;
  std::vector<std::uint64_t> lengths_;
  std::vector<std::byte> payload_;
};

}  // namespace mmsb
