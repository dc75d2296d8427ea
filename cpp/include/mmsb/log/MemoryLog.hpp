#pragma once
/// The log of an in-memory bus: the same framed records a directory bus writes to its segments,
/// kept in memory so history, time travel and diff work without a directory. Records are packed
/// into large blocks (never split across two), so appending a commit rarely allocates.
/// Checkpoints (bus.checkpoint()) are kept here too, as the bytes a checkpoint file would hold:
/// time travel starts from the nearest one, and a retention of N checkpoints drops the records
/// and checkpoints older than the oldest it keeps, as it drops files of a directory bus.
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
  /// A checkpoint kept in memory: the bytes of a checkpoint file (docs/format.md).
  struct Checkpoint {
    Lsn lsn = 0;
    std::size_t block = 0;  ///< first block holding records after it (counted from the log's start)
    std::vector<std::byte> image;
  };
  /// Appends framed records whose lsns continue the log and end at `last_lsn`. A large record
  /// (a batch, a wave) becomes a block of its own: its buffer is moved out of `records` (left
  /// empty), its spare room given back; smaller records are copied into the current block.
  void append(std::vector<std::byte>& records, Lsn last_lsn);
  /// Calls fn(record, where) for each record in lsn order until fn returns false. The record's
  /// body points into the log (valid until the next append). Throws Error(Internal) if the
  /// bytes no longer frame correctly (memory corruption).
  /// Starts at the first record still held (first_lsn()), or with `from`, at the first record
  /// after that checkpoint.
  template <class Fn>
  void for_each(Fn&& fn, const Checkpoint* from = nullptr) const {
    Lsn next = from != nullptr ? from->lsn + 1 : first_lsn_;
    for (std::size_t b = from != nullptr ? from->block - first_block_ : 0; b < blocks_.size(); ++b) {
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

  /// Keeps `image` as the checkpoint at `lsn` (the log's last lsn); records appended after it
  /// start a new block, so a retention can drop whole blocks.
  void add_checkpoint(Lsn lsn, std::vector<std::byte> image);
  /// The newest checkpoint at or before `lsn`, or nullptr.
  const Checkpoint* checkpoint_at(Lsn lsn) const noexcept;
  /// Keeps the newest `keep` (>= 1) checkpoints and the records after the oldest of them;
  /// returns the bytes given back.
  std::uint64_t apply_retention(unsigned keep);
  /// First lsn whose record is still held (1 unless a retention dropped older ones).
  Lsn first_lsn() const noexcept { return first_lsn_; }
  /// Lsn of the oldest checkpoint kept once a retention dropped anything, else 0.
  Lsn retained_from() const noexcept { return retained_from_; }
  /// Calls visit(record, held, where) for each record holding one of `lsns` (ascending, all
  /// logged), in lsn order, found through the record index: nothing else is read. Throws
  /// Error(Internal) if a record is not where the index says.
  void read_records(std::span<const Lsn> lsns, const RecordIndex::Visit& visit) const;
  /// RecordIndex::record_starts of the log's index.
  std::vector<Lsn> record_starts(Lsn first, Lsn last) const { return records_.record_starts(first, last); }
  Lsn last_lsn() const noexcept { return last_lsn_; }
  /// Bytes held (block capacities and checkpoint images).
  std::uint64_t bytes() const noexcept;
  /// Bytes of the record index (counted with the bus's index, not its log).
  std::uint64_t index_bytes() const noexcept { return records_.bytes(); }

 private:
  void check(std::size_t block, std::uint64_t pos, Lsn expected, ScannedRecord& out,
             Checksum checksum = Checksum::Verify) const;
  std::string where(std::size_t block, std::uint64_t offset) const;
  std::vector<std::vector<std::byte>> blocks_;  // blocks_[i] is block first_block_ + i
  std::vector<Checkpoint> checkpoints_;         // increasing lsn
  RecordIndex records_;  // chunk = block number counted from the log's start
  Lsn last_lsn_ = 0;
  Lsn first_lsn_ = 1;
  Lsn retained_from_ = 0;
  std::size_t first_block_ = 0;
  bool sealed_ = false;  // the last block takes no more records (a checkpoint follows it)
};

}  // namespace mmsb
