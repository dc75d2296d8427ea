// Log: the writing side (segments, appends, durability, checkpoints, retention). Recovery's scan
// and reading records back are in LogScan.cpp.
#include "mmsb/log/Log.hpp"

#include <fcntl.h>

#include <algorithm>
#include <map>
#include <optional>

#include "mmsb/core/Crc32c.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/log/BesideWriter.hpp"

namespace mmsb {

Durability parse_durability(std::string_view name) {
  if (name == "none") return Durability::None;
  if (name == "flush") return Durability::Flush;
  if (name == "fsync") return Durability::Fsync;
  fail(ErrorCode::InvalidArgument, "unknown durability '", name, "'; expected 'none', 'flush' or 'fsync'");
}


std::string_view durability_name(Durability d) noexcept {
  switch (d) {
    case Durability::None: return "none";
    case Durability::Flush: return "flush";
    case Durability::Fsync: return "fsync";
  }
  return "flush";
}

Log::Log(std::string dir, Durability durability, Access access, Lsn checkpoint_limit, const ProgressFn& progress)
    : dir_(std::move(dir)), durability_(durability), read_only_(access == Access::ReadOnly) {
  if (access == Access::Create) {
    ensure_directory(dir_);
  } else if (!is_directory(dir_)) {
    fail(ErrorCode::InvalidArgument, "no bus directory at '", dir_, "'",
         path_exists(dir_) ? " (that path is not a directory)" : "; create one with mmsb.Bus(path)");
  }
  const bool created_lock = !read_only_ && take_lock();
  if (durability_ == Durability::Fsync && !read_only_) {
    group_ = std::make_shared<GroupSync>([this] { segment_.datasync(); });
  }
  scan_beside_writer(checkpoint_limit, progress);
  if (access != Access::Create && !recovered_.checkpoint && recovered_.segments.empty()) {
    // A failed open leaves the directory as it was. Removed while still locked: a writer that
    // opened this file meanwhile finds it gone from its path once it gets the lock (take_lock).
    if (created_lock) {
      try {
        remove_file(dir_ + "/LOCK");
      } catch (const Error&) {
        // Left behind it is harmless: the next writer takes it. What to report is the missing bus.
      }
    }
    fail(ErrorCode::InvalidArgument, "'", dir_, "' holds no mmsb log or checkpoint");
  }
  if (!read_only_) remove_unfinished_checkpoints();
}

// A read-only scan takes no lock, so what it reads may be caught mid-change (see BesideWriter.hpp):
// it looks again before it reports damage. The writer's own scan, under the lock, reports at once.
void Log::scan_beside_writer(Lsn checkpoint_limit, const ProgressFn& progress) {
  auto attempt = [&]() -> std::optional<Error> {
    recovered_ = RecoveredLog{};
    indexed_from_ = 1;
    try {
      scan(checkpoint_limit, progress);
      return std::nullopt;
    } catch (const Error& e) {
      return e;
    }
  };
  // Damage, or a file gone between the listing and its read; history the retention dropped
  // and other refusals are answers.
  const auto raced = [](const std::optional<Error>& e) {
    return e && (e->code() == ErrorCode::LogCorrupt || e->code() == ErrorCode::Durability);
  };
  const std::optional<Error> failed = read_only_ ? look_beside_writer(dir_, attempt, raced) : attempt();
  if (failed) throw *failed;
}

// Only the writer, who holds the lock, writes checkpoints: a temporary one found now is what a
// writer killed while writing it left behind (recovery never reads it).
void Log::remove_unfinished_checkpoints() noexcept {
  try {
    for (const std::string& name : list_directory(dir_)) {
      std::uint64_t lsn = 0;
      const std::string_view n = name;
      if (n.ends_with(".tmp") && logfmt::parse_checkpoint_file_name(n.substr(0, n.size() - 4), lsn)) {
        remove_file(dir_ + "/" + name);
      }
    }
  } catch (const Error&) {
    // Left for the next open: the bus is fine without the space.
  }
}

bool Log::take_lock() {
  const std::string path = dir_ + "/LOCK";
  for (;;) {
    const bool existed = path_exists(path);
    PosixFile f(path, O_RDWR | O_CREAT, 0600);
    if (!f.try_lock()) {
      fail(ErrorCode::BusLocked, "bus directory '", dir_,
           "' is open for writing in another Bus (or process); close that one first");
    }
    if (f.is_at(path)) {
      lock_ = std::move(f);
      return !existed;
    }
    // Unlinked between our open and our lock by a failed open that had created it: a lock on
    // that file would exclude nobody who opens the path now. Try again with the path's file.
  }
}

Log::~Log() {
  settle_overlapped();
  try {
    if (!broken_ && !(refusing_ && group_) && segment_.is_open()) {
      sync();
      trim_preallocation();  // a bus dropped without close() must not keep its reserved blocks
    }
  } catch (...) {
    // Destruction cannot report; close() is where callers see durability errors.
  }
  if (group_) group_->close();  // nobody may lead a sync of a segment that is gone
}

void Log::start_writing() {
  last_lsn_ = recovered_.last_lsn;
  if (!recovered_.segments.empty()) {
    SegmentScan& last = recovered_.segments.back();
    const bool headerless = last.bytes.size() < logfmt::kSegmentHeaderBytes;
    // An empty segment whose first lsn a checkpoint has overtaken is left as it is; writing
    // continues in a new segment after the checkpoint.
    const bool overtaken = !headerless && last.records.empty() && last.header.first_lsn != last_lsn_ + 1;
    if (headerless) {
      remove_file(last.path);  // never got a whole header: nothing in it
    } else if (!overtaken) {
      segment_ = PosixFile(last.path, O_WRONLY);
      segment_first_lsn_ = last.header.first_lsn;
      segment_size_ = logfmt::padded(last.valid_end);
      marked_to_ = last.synced_to;
      // Cut a torn tail (or the zeros an fsync writer wrote ahead), and restore the zero padding
      // of a file cut inside it, so the next record starts where a reader looks for it.
      // Always: a writer killed with blocks reserved past the end (reserve_ahead) left them.
      segment_.truncate(segment_size_);
      segment_.seek_end();
      if (last.torn) segment_.datasync();
      if (last.header.version < logfmt::kFormatVersion) {
        // Its header names an older format (whose reader would not trust sync marks, or know
        // newer record types): go on in a new segment (this one is synced).
        segment_.datasync();
        segment_ = PosixFile();
      }
    }
  }
  recovered_.segments.clear();
  recovered_.checkpoint.reset();
  if (!segment_.is_open()) open_segment(last_lsn_ + 1);
  if (group_) group_->reset(segment_size_, last_lsn_);
}

void Log::open_segment(Lsn first_lsn) {
  if (segment_.is_open()) {
    trim_preallocation();  // a sealed segment ends at its last record
    remember_sealed(segment_.path());
  }
  const std::string path = dir_ + "/" + logfmt::segment_file_name(first_lsn);
  PosixFile f(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const auto header = logfmt::encode_segment_header({first_lsn});
  try {
    f.write_all(header);
    f.datasync();
    sync_directory(dir_);
  } catch (const Error&) {
    // A half-made segment would make recovery skip the segment still in use as "covered".
    remove_file(path);
    throw;
  }
  segment_ = std::move(f);
  segment_first_lsn_ = first_lsn;
  segment_size_ = header.size();
  allocated_ = 0;
  write_ahead_ = true;
  written_back_ = 0;
  marked_to_ = 0;
  if (group_) group_->reset(segment_size_, first_lsn - 1);
}

// A log is written once and read rarely, yet every byte written lands in the OS page cache,
// which then grows by the whole log. Fresh cache pages cost far more than the copy into them
// (measured on this VM: 64 MiB segments of 4.5 MiB writes, 300-600 MB/s with 3.4-7.5 s of
// system time per 2.4 GB, against 1.8-2.2 GB/s and under 1 s when sealed segments leave the
// cache and writeback starts behind the writer). So writeback starts every kWriteBehindBytes,
// and the cache keeps only the newest kCachedSegments sealed segments, whose pages the next
// writes reuse. Both are hints: what the log promises still rests on fdatasync alone.
void Log::write_behind() noexcept {
  if (segment_size_ < written_back_ + kWriteBehindBytes) return;  // also after a cut below it
  segment_.start_writeback(written_back_, segment_size_ - written_back_);
  written_back_ = segment_size_;
}

void Log::remember_sealed(const std::string& path) noexcept {
  try {
    sealed_.push_back(path);
    if (sealed_.size() <= kCachedSegments) return;
    const std::string oldest = std::move(sealed_.front());
    sealed_.pop_front();
    PosixFile(oldest, O_RDONLY).drop_cached();
  } catch (...) {  // out of memory, or the retention removed the file: nothing to drop then
  }
}

void Log::check_usable(bool appending) const {
  if (broken_ || (refusing_ && (appending || group_))) {
    fail(ErrorCode::Durability, "the log of '", dir_, "' ", broken_why_, "; reopen the bus to recover");
  }
}

void Log::mark_broken(const char* why) noexcept {
  settle_overlapped();  // a write in flight ends first (cut back if it failed)
  refusing_ = true;
  broken_why_ = why;
}

// Writes an appended record: `pieces` are `records` (whose last record is sealed with the tail
// here: its CRC completed over the tail's bytes), the tail, its padding and a sync mark.
void Log::write_record(std::vector<std::byte>& records, const std::array<std::span<const std::byte>, 4>& pieces,
                       const std::uint32_t* tail_crc) {
  if (tail_crc != nullptr) {
    logfmt::seal_tail_summed(records, *tail_crc, pieces[1].size());
  } else {
    logfmt::seal_tail(records, pieces[1]);
  }
  write_out({pieces[0], pieces[1], pieces[2], pieces[3]}, false);
}

// Writes (and with `sync`, fdatasyncs) bytes at the end of the active segment. On any failure
// the segment is cut back to its previous end, so it ends at the last whole record and nothing
// the caller was told failed can come back at recovery.
void Log::write_out(std::initializer_list<std::span<const std::byte>> pieces, bool sync) {
  std::size_t bytes = 0;
  for (std::span<const std::byte> p : pieces) bytes += p.size();
  try {
    if (durability_ == Durability::Fsync) preallocate(bytes);
    if (bytes != 0) segment_.write_all(pieces);
    if (sync) segment_.datasync();
  } catch (const Error&) {
    // Out of space or over a size limit: the next commits must not fail for want of room ahead.
    allocated_ = 0;
    reserved_to_ = 0;  // the cut below gives the reserved blocks back
    write_ahead_ = false;
    try {
      segment_.truncate(segment_size_);
      segment_.seek_end();
      segment_.datasync();
    } catch (const Error&) {
      broken_ = true;
    }
    throw;
  }
  segment_size_ += bytes;
  bytes_written_ += bytes;
  write_behind();
  reserve_ahead();
}

// fsync mode: a commit appended to the file makes its fdatasync journal the new file size too;
// written over zeros already in the file, it flushes only its data. Measured on this VM's disk:
// pwrite + fdatasync of 88 bytes, 11-18k/s in place against 7-8k/s appending. So small writes
// land in zeros written up to kPreallocBytes ahead (readers take zeros to the end of a segment
// for its end, docs/format.md); a big write appends, its one size change spread over its bytes.
void Log::preallocate(std::size_t incoming) {
  const std::uint64_t end = segment_size_ + incoming;
  if (end <= allocated_ || incoming > kPreallocBytes / 4 || !write_ahead_) return;
  const std::uint64_t from = std::max(allocated_, segment_size_);
  const std::vector<std::byte> zeros(end + kPreallocBytes - from);
  segment_.write_at(from, zeros);
  allocated_ = end + kPreallocBytes;
}

// Cuts the zeros written ahead and gives back the blocks reserved past the end, so a segment
// that is sealed or closed ends at its last record and holds no more disk than its bytes.
void Log::trim_preallocation() {
  if (allocated_ > segment_size_ || reserved_to_ > segment_size_) segment_.truncate(segment_size_);
  allocated_ = 0;
  reserved_to_ = 0;
}

// flush and none: appends land in disk blocks reserved ahead of them, which the filesystem has
// already allocated: 64 MiB of 290 KB appends ran 3.4-3.5 GB/s into a plain file and 4.6-4.9
// GB/s into a reserved one on this VM's ext4, and a stream of 4096-row batches at flush took
// 282-335 us per batch instead of 343-355 (alternated). Only past kReserveFromBytes: a bus that
// writes little reserves nothing (on tmpfs a reservation is zeroed memory). fsync writes zeros
// ahead instead (preallocate): its small commits then change no file size, where reserved
// blocks would still need their conversion journaled by each fdatasync.
void Log::reserve_ahead() noexcept {
  if (durability_ == Durability::Fsync || segment_size_ < kReserveFromBytes) return;
  if (segment_size_ + kReserveBytes / 2 <= reserved_to_) return;
  const std::uint64_t from = std::max(reserved_to_, segment_size_);
  reserved_to_ = segment_size_ + kReserveBytes;
  segment_.reserve(from, reserved_to_ - from);
}

// A writer thread only for logs that write large records straight from the commit (flush, and
// none's direct writes): fsync's group commit already overlaps its sync with the apply.
bool Log::overlaps(std::size_t bytes) noexcept {
  if (bytes < kOverlapBytes || group_ || read_only_ || writer_failed_) return false;
  if (!writer_) {
    try {
      writer_ = std::make_unique<HelperThread>([this](unsigned what) { writer_run(what); });
    } catch (...) {  // no thread to be had: records are written by the committer, as before
      writer_failed_ = true;
      return false;
    }
  }
  return true;
}

void Log::writer_run(unsigned what) {
  if (what == kSumRun) {
    sum_crc_ = crc32c(sum_input_.data(), sum_input_.size());
  } else {
    write_record(*overlap_records_, overlap_pieces_, overlap_summed_ ? &sum_crc_ : nullptr);
  }
}

void Log::sum_ahead(std::span<const std::byte> tail) noexcept {
  drop_sum_ahead();
  // Not beside a write in flight: the caller finishes that before its next commit.
  if (write_in_flight_ || tail.empty() || !overlaps(tail.size())) return;
  sum_input_ = tail;
  sum_pending_ = true;
  writer_->start(kSumRun, /*more_soon=*/true);  // the write follows once the caller validated
}

void Log::drop_sum_ahead() noexcept {
  if (!sum_pending_) return;
  settle_overlapped();  // only the sum runs: sum_ahead starts none beside a write
}

void Log::finish_overlapped() {
  sum_pending_ = false;
  if (!writer_ || !writer_->running()) return;
  const bool wrote = write_in_flight_;
  write_in_flight_ = false;
  writer_->wait();  // a failed write_out cut the segment back before it threw
  if (wrote) last_lsn_ = overlap_last_lsn_;
}

void Log::settle_overlapped() noexcept {
  try {
    finish_overlapped();
  } catch (...) {
  }
}

std::uint64_t Log::append(std::vector<std::byte>& records, Lsn last_lsn, std::span<const std::byte> tail,
                          bool may_overlap) {
  // The tail's CRC, when sum_ahead() began it for this record; otherwise whatever the writer
  // thread was doing ends first.
  const bool summed = sum_pending_ && may_overlap && tail.data() == sum_input_.data() &&
                      tail.size() == sum_input_.size();
  if (!summed) finish_overlapped();
  check_usable();
  // Only a crafted checkpoint brings a directory near the bound; refused before any byte is written.
  if (last_lsn > logfmt::kMaxLsn) {
    fail(ErrorCode::Durability, "the log of '", dir_, "' holds lsns up to 2^62; a commit to lsn ", last_lsn, " is refused");
  }
  // Rotate before writing: a failure to start a segment must happen before this commit's record
  // exists anywhere. The old segment is synced first, so the durable prefix never has a hole;
  // with durability=none, what is buffered for it is written to it first (the index placed those
  // records there).
  if (segment_size_ + pending_.size() >= kSegmentBytes) {
    flush();
    if (group_) {
      group_->sync_all();
    } else if (durability_ == Durability::Flush) {
      segment_.datasync();  // a newer segment on disk then proves this one whole
    }
    open_segment(last_lsn_ + 1);
  }
  // The last record's tail and its padding go between `records` and the sync mark (mark_).
  static constexpr std::byte kZeros[logfmt::kAlign] = {};
  const std::span<const std::byte> pad(kZeros, tail.empty() ? 0 : logfmt::tail_padding(records.size() + tail.size()));
  // Group commit: say what the last sync covered, so recovery can tell damage there (corruption)
  // from this group's unsynced records arriving out of order (a torn tail).
  mark_.clear();
  std::uint64_t mark = 0;
  if (group_) {
    mark = group_->durable_offset();
    if (mark > marked_to_) logfmt::append_sync_mark(mark_, last_lsn + 1, mark);
  }
  // Where they land; the index reads only headers, so the last record may end past `records`.
  const std::uint64_t at = segment_size_ + pending_.size();
  records_.add(segment_first_lsn_, at, records);
  if (!mark_.empty()) records_.add(segment_first_lsn_, at + records.size() + tail.size() + pad.size(), mark_);
  const std::size_t bytes = records.size() + tail.size() + pad.size() + mark_.size();
  bool write_now = true;
  if (durability_ == Durability::None) {
    // Small records gather in one reused buffer, written when the next would overflow it (a
    // write call per record costs more than the copy); a large one is written as it is, after
    // what is buffered, since copying it would only add a pass over its bytes. Nothing is synced:
    // "none" promises nothing before close or checkpoint.
    const bool direct = bytes >= kNoneDirectBytes;
    if (direct || pending_.size() + bytes > kNoneBufferBytes) flush();
    if (!direct) {
      if (!tail.empty()) logfmt::seal_tail(records, tail);
      // Room for a full buffer once: the inserts then cannot fail half way through a record.
      if (pending_.capacity() < kNoneBufferBytes) pending_.reserve(kNoneBufferBytes);
      for (std::span<const std::byte> piece : {std::span<const std::byte>(records), tail, pad,
                                                std::span<const std::byte>(mark_)}) {
        pending_.insert(pending_.end(), piece.begin(), piece.end());
      }
      write_now = false;
    }
  }
  if (write_now && may_overlap && overlaps(bytes)) {
    // Sealed and written on the writer thread while the committer applies the change;
    // finish_overlapped() moves last_lsn_ on once it is.
    overlap_records_ = &records;
    overlap_pieces_ = {records, tail, pad, mark_};
    overlap_summed_ = summed;
    overlap_last_lsn_ = last_lsn;
    write_in_flight_ = true;
    sum_pending_ = false;  // used: the write runs after the sum, and waiting covers both
    writer_->start(kWriteRun);
    return 0;
  }
  // The sum, if any, is done before anything below reads it.
  if (summed) finish_overlapped();
  // Written now. fsync's are synced by group commit for every writer at once: a large record's
  // sync starts now on the helper thread, a small one's when its committer waits (GroupSync).
  if (write_now) write_record(records, {records, tail, pad, mark_}, summed ? &sum_crc_ : nullptr);
  marked_to_ = std::max(marked_to_, mark);
  last_lsn_ = last_lsn;
  return group_ ? group_->written(segment_size_, last_lsn, bytes >= kEarlySyncBytes) : 0;
}

Lsn Log::abandon_unsynced() {
  const GroupSync::Point kept = group_->abandon([&](const GroupSync::Point& durable) {
    try {
      segment_.truncate(durable.offset);
      segment_.seek_end();
      segment_.datasync();
    } catch (const Error&) {
      broken_ = true;
    }
    allocated_ = 0;
    bytes_written_ -= segment_size_ - durable.offset;
    segment_size_ = durable.offset;
    written_back_ = std::min(written_back_, segment_size_);
    marked_to_ = std::min(marked_to_, durable.offset);
    last_lsn_ = durable.lsn;
  });
  return kept.lsn;
}

void Log::close() {
  finish_overlapped();
  sync();
  if (segment_.is_open() && segment_size_ > marked_to_) {
    // Everything is synced now: a last mark lets recovery call any later damage corruption.
    std::vector<std::byte> mark;
    logfmt::append_sync_mark(mark, last_lsn_ + 1, segment_size_);
    write_out({mark}, true);
    marked_to_ = segment_size_ - mark.size();
  }
  if (segment_.is_open() && allocated_ > segment_size_) {
    trim_preallocation();
    segment_.datasync();
  } else if (segment_.is_open()) {
    trim_preallocation();  // reserved blocks only (if any): the file's size does not change
  }
  segment_ = PosixFile();  // nothing left for the destructor to sync
}

void Log::flush() {
  finish_overlapped();
  check_usable(false);
  if (!pending_.empty()) {
    write_out({pending_}, false);
    pending_.clear();
  }
}

void Log::sync() {
  finish_overlapped();
  check_usable(false);
  if (group_) {
    group_->sync_all();
  } else if (!pending_.empty()) {
    write_out({pending_}, true);
    pending_.clear();
  } else {
    segment_.datasync();
  }
}

std::string Log::checkpoint(Lsn lsn, PageTable& table, const GraphImage& graph, const PageBytesFn& bytes_of,
                            const ProgressFn& progress) {
  check_usable();
  sync();
  std::string path = write_checkpoint(dir_, lsn, table, graph, bytes_of, progress);
  open_segment(lsn + 1);
  if (retention_) apply_retention();
  return path;
}

std::uint64_t Log::enforce_retention() {
  check_usable();
  return retention_ ? apply_retention() : 0;
}

// Keeps the newest `retention_` checkpoints and the segments needed after the oldest of them.
// Files go oldest first, so a crash in between leaves a directory that still recovers.
std::uint64_t Log::apply_retention() {
  std::map<Lsn, std::string> segments, checkpoints;
  for (const std::string& name : list_directory(dir_)) {
    std::uint64_t n = 0;
    if (logfmt::parse_segment_file_name(name, n)) segments.emplace(n, name);
    if (logfmt::parse_checkpoint_file_name(name, n)) checkpoints.emplace(n, name);
  }
  if (checkpoints.empty()) return 0;  // nothing to measure the retention against yet
  std::uint64_t removed = 0;
  while (checkpoints.size() > *retention_) {
    remove_file(dir_ + "/" + checkpoints.begin()->second);
    checkpoints.erase(checkpoints.begin());
    ++removed;
  }
  const Lsn oldest = checkpoints.begin()->first;
  Lsn kept_from = 0;  // first lsn of the oldest segment kept, when any was removed
  for (auto it = segments.begin(); it != segments.end() && std::next(it) != segments.end(); ++it) {
    if (std::next(it)->first > oldest + 1) break;  // this segment still holds lsns after `oldest`
    remove_file(dir_ + "/" + it->second);
    ++removed;
    kept_from = std::next(it)->first;
  }
  if (kept_from != 0) {
    records_.drop_before(kept_from);
    indexed_from_ = std::max(indexed_from_, kept_from);
  }
  if (removed != 0) sync_directory(dir_);
  if (removed != 0 || retained_from_ != 0) retained_from_ = oldest;
  return removed;
}

}  // namespace mmsb
