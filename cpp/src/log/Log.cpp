#include "mmsb/log/Log.hpp"

#include <fcntl.h>

#include <algorithm>
#include <map>

#include "mmsb/core/Error.hpp"

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
  } else if (!path_exists(dir_)) {
    fail(ErrorCode::InvalidArgument, "no bus directory at '", dir_, "'; create one with mmsb.Bus(path)");
  }
  if (!read_only_) {
    lock_ = PosixFile(dir_ + "/LOCK", O_RDWR | O_CREAT, 0600);
    if (!lock_.try_lock()) {
      fail(ErrorCode::BusLocked, "bus directory '", dir_,
           "' is open for writing in another Bus (or process); close that one first");
    }
  }
  scan(checkpoint_limit, progress);
  if (access != Access::Create && !recovered_.checkpoint && recovered_.segments.empty()) {
    fail(ErrorCode::InvalidArgument, "'", dir_, "' holds no mmsb log or checkpoint");
  }
}

Log::~Log() {
  try {
    if (!broken_ && segment_.is_open()) sync();
  } catch (...) {
    // Destruction cannot report; close() is where callers see durability errors.
  }
}

void Log::scan(Lsn checkpoint_limit, const ProgressFn& progress) {
  std::map<Lsn, std::string> segments, checkpoints;
  for (const std::string& name : list_directory(dir_)) {
    std::uint64_t n = 0;
    if (logfmt::parse_segment_file_name(name, n)) {
      if (n == 0) fail(ErrorCode::LogCorrupt, "'", dir_, "/", name, "' is not an mmsb segment (lsns start at 1)");
      segments.emplace(n, name);
    }
    if (logfmt::parse_checkpoint_file_name(name, n)) checkpoints.emplace(n, name);
  }
  // Newest checkpoint that reads back whole; older ones are the fallback for a damaged newest.
  for (auto it = checkpoints.rbegin(); it != checkpoints.rend() && !recovered_.checkpoint; ++it) {
    if (it->first > checkpoint_limit || checkpoint_limit == 0) continue;
    try {
      recovered_.checkpoint = read_checkpoint(dir_ + "/" + it->second);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::LogCorrupt) throw;
    }
  }
  const Lsn base = recovered_.checkpoint ? recovered_.checkpoint->lsn : 0;
  recovered_.last_lsn = base;
  Lsn expected = 0;  // first lsn the next segment must start at (0: not known yet)
  ProgressMeter meter(progress, "scan", segments.size());
  for (auto it = segments.begin(); it != segments.end(); ++it) {
    const bool last = std::next(it) == segments.end();
    auto next = std::next(it);
    // Segments wholly covered by the checkpoint are not needed for replay.
    if (!last && next->first <= base + 1) {
      meter.advance();
      continue;
    }
    SegmentScan s = scan_segment(dir_ + "/" + it->second, /*sealed=*/!last);
    const Lsn first = s.header.first_lsn;
    if (s.bytes.size() >= logfmt::kSegmentHeaderBytes && first != it->first) {
      fail(ErrorCode::LogCorrupt, "segment '", s.path, "' header says first lsn ", first,
           " but its name says ", it->first);
    }
    if (expected != 0 && first != expected) {
      fail(ErrorCode::LogCorrupt, "segment '", s.path, "' starts at lsn ", first, " but the log before it ends at lsn ",
           expected - 1, "; a segment is missing");
    }
    if (expected == 0 && first > base + 1) {
      if (checkpoints.upper_bound(checkpoint_limit) != checkpoints.end()) {
        // Time travel before the oldest retained checkpoint: that history was dropped on purpose.
        fail(ErrorCode::HistoryUnavailable, "lsn ", checkpoint_limit, " is older than the history '", dir_,
             "' retains (its log starts at lsn ", first, ", its oldest checkpoint is at lsn ",
             checkpoints.begin()->first, ")");
      }
      fail(ErrorCode::LogCorrupt, "the log of '", dir_, "' starts at lsn ", first, " (segment '", s.path,
           "') but ", recovered_.checkpoint ? "the newest valid checkpoint ends" : "without a checkpoint the log must start",
           " at lsn ", base + 1, "; records in between are missing");
    }
    if (s.torn && !last) {
      fail(ErrorCode::LogCorrupt, "segment '", s.path, "' is damaged (", s.torn_reason,
           ") and later segments exist; this is corruption, not a torn tail");
    }
    Lsn end = first;
    for (const ScannedRecord& r : s.records) end = r.header.first_lsn + r.header.lsn_count;
    expected = end;
    if (end > 0) recovered_.last_lsn = std::max(recovered_.last_lsn, end - 1);
    if (s.torn) {
      recovered_.truncated_tail = true;
      recovered_.tail_reason = s.torn_reason + " in " + s.path;
    }
    recovered_.segments.push_back(std::move(s));
    meter.advance();
  }
  meter.finish();
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
      segment_size_ = logfmt::padded(last.valid_end);
      // Cut a torn tail, and restore the zero padding of a file cut inside it, so the next
      // record starts where a reader looks for it.
      if (last.torn || segment_size_ != last.bytes.size()) segment_.truncate(segment_size_);
      segment_.seek_end();
      if (last.torn) segment_.datasync();
    }
  }
  recovered_.segments.clear();
  recovered_.checkpoint.reset();
  if (!segment_.is_open()) open_segment(last_lsn_ + 1);
}

void Log::open_segment(Lsn first_lsn) {
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
  segment_size_ = header.size();
}

void Log::check_usable() const {
  if (broken_) {
    fail(ErrorCode::Durability, "the log of '", dir_,
         "' could not be restored after a failed write; reopen the bus to recover");
  }
}

// Writes (and with `sync`, fdatasyncs) bytes at the end of the active segment. On any failure
// the segment is cut back to its previous end, so it ends at the last whole record and nothing
// the caller was told failed can come back at recovery.
void Log::write_out(std::span<const std::byte> bytes, bool sync) {
  try {
    segment_.write_all(bytes);
    if (sync) segment_.datasync();
  } catch (const Error&) {
    try {
      segment_.truncate(segment_size_);
      segment_.seek_end();
      segment_.datasync();
    } catch (const Error&) {
      broken_ = true;
    }
    throw;
  }
  segment_size_ += bytes.size();
  bytes_written_ += bytes.size();
}

void Log::append(std::vector<std::byte>& records, Lsn last_lsn) {
  check_usable();
  // Rotate before writing: a failure to start a segment must happen before this commit's record
  // exists anywhere.
  if (segment_size_ >= kSegmentBytes && pending_.empty()) open_segment(last_lsn_ + 1);
  if (durability_ == Durability::None) {
    // Past the bound the buffer is handed to the OS, but not synced: "none" promises nothing
    // before close or checkpoint, and a sync per 64 MiB made bulk loads 3x slower than "flush".
    if (pending_.size() + records.size() > kNoneBufferBytes) {
      write_out(pending_, false);
      pending_.clear();
    }
    if (pending_.empty()) {
      pending_.swap(records);  // a big batch record is not copied a second time
    } else {
      pending_.insert(pending_.end(), records.begin(), records.end());
    }
  } else {
    write_out(records, durability_ == Durability::Fsync);
  }
  last_lsn_ = last_lsn;
}

void Log::close() {
  sync();
  segment_ = PosixFile();  // nothing left for the destructor to sync
}

void Log::flush() {
  check_usable();
  if (!pending_.empty()) {
    write_out(pending_, false);
    pending_.clear();
  }
}

void Log::sync() {
  check_usable();
  if (!pending_.empty()) {
    write_out(pending_, true);
    pending_.clear();
  } else {
    segment_.datasync();
  }
}

std::string Log::checkpoint(Lsn lsn, PageTable& table, const GraphImage& graph, const ProgressFn& progress) {
  sync();
  std::string path = write_checkpoint(dir_, lsn, table, graph, progress);
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
  for (auto it = segments.begin(); it != segments.end() && std::next(it) != segments.end(); ++it) {
    if (std::next(it)->first > oldest + 1) break;  // this segment still holds lsns after `oldest`
    remove_file(dir_ + "/" + it->second);
    ++removed;
  }
  if (removed != 0) sync_directory(dir_);
  if (removed != 0 || retained_from_ != 0) retained_from_ = oldest;
  return removed;
}

}  // namespace mmsb
