#pragma once
/// Log: one bus directory. Holds the writer lock, scans what is there at open (newest valid
/// checkpoint + the segments after it), appends framed records with the chosen durability, writes
/// checkpoints and rotates segments.
///
/// Thread safety: not thread safe; the bus calls it under its commit lock. The exception is the
/// GroupSync of durability=fsync (group()), which committers wait on outside that lock.
#include <array>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mmsb/core/HelperThread.hpp"
#include "mmsb/core/Progress.hpp"
#include "mmsb/log/Checkpoint.hpp"
#include "mmsb/log/GroupSync.hpp"
#include "mmsb/log/PosixFile.hpp"
#include "mmsb/log/RecordIndex.hpp"
#include "mmsb/log/SegmentReader.hpp"

namespace mmsb {

/// none: records kept in memory, written at checkpoint/close (handed to the OS unsynced past a
/// 64 MiB bound);
/// flush: each commit written to the OS (survives the process being killed);
/// fsync: each commit fdatasync'ed (survives power loss).
enum class Durability { None, Flush, Fsync };
Durability parse_durability(std::string_view name);
std::string_view durability_name(Durability d) noexcept;

/// What a directory held at open: the checkpoint to start from and the segments to replay.
struct RecoveredLog {
  std::optional<CheckpointData> checkpoint;
  std::vector<SegmentScan> segments;  ///< in lsn order
  Lsn last_lsn = 0;                   ///< lsn of the last intact record (or the checkpoint's)
  bool truncated_tail = false;        ///< a torn tail was found (and cut off for a writer)
  std::string tail_reason;
};

class Log {
 public:
  /// Largest segment before a new one is started.
  static constexpr std::uint64_t kSegmentBytes = std::uint64_t{64} << 20;
  /// durability=fsync: zeros written ahead of small commits, so each lands inside the file.
  static constexpr std::uint64_t kPreallocBytes = std::uint64_t{64} << 10;
  /// durability=none gathers records smaller than kNoneDirectBytes in a buffer of this size
  /// (kept from write to write, so it stays in cache) and writes it when full.
  static constexpr std::size_t kNoneBufferBytes = std::size_t{1} << 20;
  static constexpr std::size_t kNoneDirectBytes = std::size_t{64} << 10;
  /// durability=flush and none: once a segment holds kReserveFromBytes, disk blocks are reserved
  /// this far past its end (PosixFile::reserve), renewed when the writer is half way through.
  static constexpr std::uint64_t kReserveFromBytes = std::uint64_t{1} << 20;
  static constexpr std::uint64_t kReserveBytes = std::uint64_t{8} << 20;
  /// durability=fsync: a record of at least this many bytes has its fdatasync started at once on
  /// GroupSync's helper thread, so the disk works while the commit applies (GroupSync::written).
  static constexpr std::size_t kEarlySyncBytes = std::size_t{64} << 10;
  /// durability=flush and none: a record of at least this many bytes may be written on the log's
  /// writer thread while the commit applies it (append's may_overlap).
  static constexpr std::size_t kOverlapBytes = kNoneDirectBytes;
  /// The OS is asked to start writing back each stretch of this many bytes once it is written
  /// (small enough that rotation's sync of the old segment finds little left to write).
  static constexpr std::uint64_t kWriteBehindBytes = std::uint64_t{2} << 20;
  /// Sealed segments left in the OS page cache for history lookups; older ones are dropped.
  static constexpr std::size_t kCachedSegments = 4;

  enum class Access {
    Create,    ///< open for writing, creating the directory if needed
    Open,      ///< open an existing bus for writing
    ReadOnly,  ///< scan only: no lock, no writer, nothing on disk changes
  };
  /// Opens `dir` (created with mode 0700 for Access::Create), taking the writer lock unless
  /// read-only (Error(BusLocked) if held), then scans it, starting from the newest valid
  /// checkpoint whose lsn is at most `checkpoint_limit` (no checkpoint at all when it is 0).
  /// Throws Error(LogCorrupt) for corruption, Error(Durability) for I/O failures,
  /// Error(InvalidArgument) when no bus is there and the access does not create one; a LOCK file
  /// this call created there is removed again.
  /// `progress` hears phase "scan" (segments checked of those to read).
  Log(std::string dir, Durability durability, Access access,
      Lsn checkpoint_limit = std::numeric_limits<Lsn>::max(), const ProgressFn& progress = {});
  ~Log();
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  /// The scan result; the bus replays it once, then calls start_writing().
  RecoveredLog& recovered() noexcept { return recovered_; }
  /// Cuts a torn tail off, drops the scan buffers and positions the writer after `last_lsn`.
  void start_writing();

  /// Appends framed records holding lsns up to `last_lsn`, durable per the mode on return —
  /// except with durability=fsync, where they are written but not yet synced: the returned
  /// ticket (0 in the other modes) is durable once group()->wait(ticket) says so.
  /// On failure the file is cut back to where it was and Error(Durability) is thrown: the caller
  /// must not apply the change. After a failure that cannot be undone every append throws.
  /// With durability=none the bytes may be moved out of `records` (left empty) instead of copied.
  /// A non-empty `tail` ends the last record (sealed with it, logfmt::seal_record): written after
  /// `records` where it lies, then its padding.
  /// `may_overlap`: the caller applies the change with its undo right after and then calls
  /// finish_overlapped(), so a record overlaps() takes is handed to the writer thread and written
  /// meanwhile (ticket 0). Until finish_overlapped() the caller must not call the log again nor
  /// change `records` and `tail`.
  std::uint64_t append(std::vector<std::byte>& records, Lsn last_lsn, std::span<const std::byte> tail = {},
                       bool may_overlap = false);
  /// Whether append(..., may_overlap) would write records of about `bytes` on the writer thread
  /// (durability flush or none, no group commit, at least kOverlapBytes, a thread to be had).
  bool overlaps(std::size_t bytes) noexcept;
  /// For a caller that will append a record ending with `tail` (with may_overlap) once it has
  /// validated its change: starts the tail's CRC32C on the writer thread now (when the record
  /// would be written there), so the checksum runs while the caller validates. The next append
  /// with may_overlap and this very tail uses it; any other log call drops it. The caller keeps
  /// `tail` unchanged and alive until then, or until drop_sum_ahead().
  void sum_ahead(std::span<const std::byte> tail) noexcept;
  /// Drops a sum begun by sum_ahead() that no append used, once it is done (the caller may then
  /// free its tail). Nothing to do once an append used it.
  void drop_sum_ahead() noexcept;
  /// sum_ahead() for a scope: dropped when it ends unless an append used it. `log` may be null.
  class SumAhead {
   public:
    SumAhead(Log* log, std::span<const std::byte> tail) noexcept : log_(log) {
      if (log_ != nullptr) log_->sum_ahead(tail);
    }
    ~SumAhead() {
      if (log_ != nullptr) log_->drop_sum_ahead();
    }
    SumAhead(const SumAhead&) = delete;
    SumAhead& operator=(const SumAhead&) = delete;

   private:
    Log* log_;
  };
  /// Waits for the write append() handed over (none: returns at once). When it failed, the file
  /// is cut back to where it was and Error(Durability) is thrown: the caller undoes the change,
  /// as for a failed append().
  void finish_overlapped();
  /// Writes everything pending and fdatasyncs it (close, checkpoint, durability=none). With
  /// durability=fsync a failure leaves group()->failed() set until abandon_unsynced().
  void sync();
  /// durability=fsync: where committers wait for their tickets (shared, so a waiter may outlive
  /// the log: once the log closes, what was not durable fails).
  const std::shared_ptr<GroupSync>& group() const noexcept { return group_; }
  /// After a failed sync: cuts the segment back to the last durable record and returns its lsn;
  /// every ticket not yet durable is then failed. A cut that fails breaks the log (every later
  /// append throws).
  Lsn abandon_unsynced();
  /// Hands everything pending to the OS without syncing (so readers of the files see it).
  void flush();
  /// The caller could not finish a change whose records are written (they may even be durable):
  /// nothing more may be written after them, so every later append and checkpoint throws
  /// Error(Durability) naming `why` (a static string: nothing to allocate when memory ran out);
  /// reopening the bus replays what reached the disk. Without group commit, records already
  /// appended are whole and acknowledged, so flush, sync and close still write them out; with it,
  /// whose unsynced records belong to transactions a failed sync rolls back, they throw too.
  void mark_broken(const char* why) noexcept;
  /// Final sync, then no more writing (the lock is released with the object).
  void close();
  /// Writes a checkpoint of `table` at `lsn` (after sync()) and starts a new segment after it;
  /// with a retention, then drops checkpoints and segments older than it keeps.
  /// `progress` hears phase "checkpoint" (pages written).
  std::string checkpoint(Lsn lsn, PageTable& table, const GraphImage& graph, const PageBytesFn& bytes_of,
                         const ProgressFn& progress = {});
  /// Keep only the newest `checkpoints` checkpoints (>= 1) and the log after the oldest of them;
  /// nullopt keeps everything (the default). Applied at each checkpoint.
  void set_retention(std::optional<unsigned> checkpoints) noexcept { retention_ = checkpoints; }
  /// Applies the retention now (as a checkpoint does); returns the files removed. Throws
  /// Error(Durability) if the directory cannot be listed or synced.
  std::uint64_t enforce_retention();
  /// Lsn of the oldest checkpoint the retention keeps (history before it is gone); 0 when all
  /// history is kept or no retention has been applied yet.
  Lsn retained_from() const noexcept { return retained_from_; }

  // ---- record index: where each record is, for lookups by lsn (history) ---------------------
  /// Whether the record index covers the log from lsn 1. Recovery indexes the segments it reads,
  /// not those a checkpoint let it skip; the retention drops the entries of segments it removes.
  bool indexed_from_start() const noexcept { return indexed_from_ == 1; }
  /// First lsn the record index covers (see indexed_from_start).
  Lsn indexed_from() const noexcept { return indexed_from_; }
  /// RecordIndex::record_starts of the log's index.
  std::vector<Lsn> record_starts(Lsn first, Lsn last) const { return records_.record_starts(first, last); }
  /// Reads the whole log once (after flush()), so the record index covers it from lsn 1, and
  /// calls fn(record, where) for each record in lsn order. Throws Error(HistoryUnavailable) when
  /// the log no longer starts at lsn 1 (the retention removed its start), Error(LogCorrupt) for
  /// damage, Error(Durability) for I/O failures.
  void index_whole_log(const std::function<void(const ScannedRecord&, const std::string&)>& fn);
  /// Calls visit(record, held, where) for each record holding one of `lsns` (ascending, all
  /// appended), in lsn order, after flush(). Only those records' bytes are read: their headers
  /// are checked, not their checksums (checked when they were written or recovered). Throws
  /// Error(HistoryUnavailable) for an lsn whose segment the retention removed, Error(LogCorrupt)
  /// if a record is not where the index says, Error(Durability) if a segment cannot be read.
  void read_records(std::span<const Lsn> lsns, const RecordIndex::Visit& visit);
  /// Bytes of the record index.
  std::uint64_t index_bytes() const noexcept { return records_.bytes(); }

  const std::string& dir() const noexcept { return dir_; }
  Durability durability() const noexcept { return durability_; }
  std::uint64_t bytes_written() const noexcept { return bytes_written_; }
  std::uint64_t pending_bytes() const noexcept { return pending_.size(); }

 private:
  void scan(Lsn checkpoint_limit, const ProgressFn& progress);
  void scan_beside_writer(Lsn checkpoint_limit, const ProgressFn& progress);
  /// finish_overlapped() for callers that cannot report a failure (the write's own cut back
  /// already left the file consistent).
  void settle_overlapped() noexcept;
  void open_segment(Lsn first_lsn);
  /// Seals the tail (pieces[1]) into the last record of `records` (pieces[0]), from its CRC when
  /// `tail_crc` has it (sum_ahead), then writes the pieces (records, tail, padding, sync mark).
  void write_record(std::vector<std::byte>& records, const std::array<std::span<const std::byte>, 4>& pieces,
                    const std::uint32_t* tail_crc = nullptr);
  /// The writer thread's job: kSumRun checksums sum_input_, kWriteRun writes the overlap_ pieces.
  void writer_run(unsigned what);
  static constexpr unsigned kSumRun = 0, kWriteRun = 1;
  /// Writes `pieces` one after the other; with `sync`, fdatasyncs them.
  void write_out(std::initializer_list<std::span<const std::byte>> pieces, bool sync);
  void preallocate(std::size_t incoming);
  void trim_preallocation();
  void reserve_ahead() noexcept;
  void write_behind() noexcept;
  void remember_sealed(const std::string& path) noexcept;
  /// Throws Error(Durability) if the log may not write: after a failed write it could not take
  /// back, or (`appending`, or with group commit) after mark_broken.
  void check_usable(bool appending = true) const;
  std::uint64_t apply_retention();
  /// Takes the writer lock (Error(BusLocked) if held); returns whether this call created LOCK.
  bool take_lock();
  /// Removes the temporary files of checkpoints a killed writer did not finish.
  void remove_unfinished_checkpoints() noexcept;

  std::string dir_;
  Durability durability_;
  PosixFile lock_;
  PosixFile segment_;
  std::uint64_t segment_size_ = 0;
  std::uint64_t allocated_ = 0;  // fsync: the file's size when zeros were written past segment_size_
  bool write_ahead_ = true;      // cleared by a failed write: no more zeros ahead in this segment
  std::uint64_t reserved_to_ = 0;  // flush/none: blocks reserved up to here (reserve_ahead)
  std::uint64_t written_back_ = 0;  // the OS was asked to write the active segment back this far
  std::deque<std::string> sealed_;  // the newest segments this writer sealed, oldest first
  RecoveredLog recovered_;
  std::vector<std::byte> pending_;  // durability=none: not yet written
  std::vector<std::byte> mark_;  // append(): the sync mark after a record (group commit), if any
  Lsn last_lsn_ = 0;
  std::uint64_t bytes_written_ = 0;
  bool broken_ = false;      // a failed write could not be taken back: write nothing more
  bool refusing_ = false;    // mark_broken: append nothing more
  const char* broken_why_ = "could not be restored after a failed write";
  bool read_only_ = false;
  std::optional<unsigned> retention_;
  Lsn retained_from_ = 0;
  std::shared_ptr<GroupSync> group_;  // durability=fsync only
  std::uint64_t marked_to_ = 0;       // what the active segment's SyncMarks vouch for
  // append(..., may_overlap): the writer thread (started on first use; null if none could be
  // had), the pieces it writes next, and the lsn the log reaches once they are written.
  std::unique_ptr<HelperThread> writer_;
  bool writer_failed_ = false;
  bool write_in_flight_ = false;  // a write run was begun and not yet waited for
  std::vector<std::byte>* overlap_records_ = nullptr;
  std::array<std::span<const std::byte>, 4> overlap_pieces_;
  bool overlap_summed_ = false;   // the write seals its tail from sum_crc_
  Lsn overlap_last_lsn_ = 0;
  // sum_ahead(): the tail being checksummed (changed only while no run is in progress), whether
  // an append may still use it, and its CRC (the sum run writes it, the write run reads it).
  std::span<const std::byte> sum_input_;
  bool sum_pending_ = false;
  std::uint32_t sum_crc_ = 0;
  RecordIndex records_;            // chunk = the first lsn of the record's segment (its file name)
  Lsn segment_first_lsn_ = 0;      // of the active segment
  Lsn indexed_from_ = 1;           // records_ holds every record from this lsn on
};

}  // namespace mmsb
