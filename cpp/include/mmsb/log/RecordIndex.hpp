#pragma once
/// RecordIndex: where each logged record lives, so a query that knows its lsns (history) reads
/// only the records holding them instead of scanning the log.
///
/// One entry per record that takes lsns (not per lsn: a batch of a million rows is one entry),
/// keyed by the record's first lsn. Lsns only grow, so the entries stay sorted and the record
/// holding an lsn is found by binary search. A location is a chunk (a segment file or a block of
/// the in-memory log, named by the caller) and the record's byte offset in it; chunks are kept
/// once each, not per record, so an entry costs 12 bytes.
/// Thread safety: none; its log uses it under the bus's commit lock.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "mmsb/core/Types.hpp"
#include "mmsb/log/SegmentReader.hpp"

namespace mmsb {

class RecordIndex {
 public:
  /// Where one record is.
  struct Location {
    Lsn first_lsn = 0;         ///< of the record
    std::uint64_t chunk = 0;   ///< the caller's name for its segment or block
    std::uint64_t offset = 0;  ///< of the record header in the chunk
  };
  /// What a log hands each record it reads for a lookup: the record (checked against its
  /// location), the looked-up lsns it holds, and where it is (for error messages).
  using Visit = std::function<void(const ScannedRecord&, std::span<const Lsn>, const std::string&)>;

  /// Notes the framed records in `framed`, which start at byte `offset` of chunk `chunk`.
  /// Records that take no lsn (an empty transaction) are not noted. Entries at or after the
  /// first noted lsn are dropped first: they are of an append that failed or was cut back, whose
  /// lsns the log reuses. Throws Error(Internal) for bytes that do not frame as records.
  void add(std::uint64_t chunk, std::uint64_t offset, std::span<const std::byte> framed);
  /// Calls fn(location, held) for each record holding one of `lsns` (ascending), in lsn order,
  /// with the run of `lsns` it holds. A record is taken to hold the lsns up to the next entry's
  /// first one (the last record: any lsn after it; its reader checks the header).
  /// Throws Error(HistoryUnavailable) for an lsn before the first entry (its records were
  /// dropped with their segments, or never noted).
  void for_each_record(std::span<const Lsn> lsns,
                       const std::function<void(const Location&, std::span<const Lsn>)>& fn) const;
  /// One lsn of each record holding an lsn in [first, last], ascending: `first`, then the first
  /// lsn of each later record up to `last`; for for_each_record, so a range query reads only the
  /// records in its range. Empty when first > last.
  std::vector<Lsn> record_starts(Lsn first, Lsn last) const;
  /// Drops the entries of records that start before `lsn` (their segments were removed).
  void drop_before(Lsn lsn);
  bool empty() const noexcept { return lsns_.empty(); }
  std::size_t size() const noexcept { return lsns_.size(); }
  /// Bytes held (capacities).
  std::uint64_t bytes() const noexcept;

 private:
  struct Chunk {
    Lsn first_lsn;  // of the first record noted in it
    std::uint64_t name;
  };
  std::vector<Lsn> lsns_;               // first lsn of each record, increasing
  std::vector<std::uint32_t> offsets_;  // its offset / 8 (records start at multiples of 8)
  std::vector<Chunk> chunks_;           // increasing first_lsn
};

}  // namespace mmsb
