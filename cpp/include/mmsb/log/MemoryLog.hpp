#pragma once
/// The log of an in-memory bus: the same framed records a directory bus writes to its segments,
/// kept in memory so history, time travel and diff work without a directory. Records are packed
/// into large blocks (never split across two), so appending a commit rarely allocates.
/// Thread safety: none; the bus appends and reads under its commit lock.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mmsb/core/Types.hpp"
#include "mmsb/log/RecordIndex.hpp"
#include "mmsb/log/SegmentReader.hpp"

namespace mmsb {

class MemoryLog {
 public:
  /// Appends framed records whose lsns continue the log and end at `last_lsn`. A large buffer
  /// (a batch) becomes a block of its own and is moved out of `records` (left empty); smaller
  /// ones are copied into the current block.
  void append(std::vector<std::byte>& records, Lsn last_lsn);
  /// Calls fn(record, where) for each record in lsn order until fn returns false. The record's
  /// body points into the log (valid until the next append). Throws Error(Internal) if the
  /// bytes no longer frame correctly (memory corruption).
  template <class Fn>
  void for_each(Fn&& fn) const {
    Lsn next = 1;
    for (std::size_t b = 0; b < blocks_.size(); ++b) {
      std::uint64_t pos = 0;
      while (pos < blocks_[b].size()) {
        ScannedRecord r;
        check(b, pos, next, r);
        pos = r.offset + logfmt::padded(logfmt::kRecordHeaderBytes + r.header.body_bytes);
        next = r.header.first_lsn + r.header.lsn_count;
        if (!fn(r, where(b, r.offset))) return;
      }
    }
  }
  /// Calls visit(record, held, where) for each record holding one of `lsns` (ascending, all
  /// logged), in lsn order, found through the record index: nothing else is read. Throws
  /// Error(Internal) if a record is not where the index says.
  void read_records(std::span<const Lsn> lsns, const RecordIndex::Visit& visit) const;
  Lsn last_lsn() const noexcept { return last_lsn_; }
  /// Bytes held (block capacities).
  std::uint64_t bytes() const noexcept;
  /// Bytes of the record index (counted with the bus's index, not its log).
  std::uint64_t index_bytes() const noexcept { return records_.bytes(); }

 private:
  void check(std::size_t block, std::uint64_t pos, Lsn expected, ScannedRecord& out,
             Checksum checksum = Checksum::Verify) const;
  static std::string where(std::size_t block, std::uint64_t offset);
  std::vector<std::vector<std::byte>> blocks_;
  RecordIndex records_;  // chunk = block number
  Lsn last_lsn_ = 0;
};

}  // namespace mmsb
