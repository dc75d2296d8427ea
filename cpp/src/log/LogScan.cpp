// Log: the reading side. The scan at open (newest valid checkpoint, then every segment after it,
// checked for gaps and a torn tail), and reading records back by lsn for history lookups.
#include <algorithm>
#include <iterator>
#include <map>
#include <string>

#include "mmsb/core/Error.hpp"
#include "mmsb/log/Log.hpp"

namespace mmsb {

namespace {
// Notes the intact records of a scanned segment (those before its valid end) in `index`.
void index_segment(RecordIndex& index, const SegmentScan& s) {
  if (s.valid_end <= logfmt::kSegmentHeaderBytes) return;
  const std::span<const std::byte> bytes(s.bytes.data(), s.valid_end);
  index.add(s.header.first_lsn, logfmt::kSegmentHeaderBytes, bytes.subspan(logfmt::kSegmentHeaderBytes));
}
}  // namespace

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
  Lsn damaged_lsn = 0;  // the newest checkpoint that did not read back, and why
  std::string damaged_why;
  for (auto it = checkpoints.rbegin(); it != checkpoints.rend() && !recovered_.checkpoint; ++it) {
    if (it->first > checkpoint_limit || checkpoint_limit == 0) continue;
    try {
      recovered_.checkpoint = read_checkpoint(dir_ + "/" + it->second);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::LogCorrupt) throw;
      if (damaged_lsn == 0) {
        damaged_lsn = it->first;
        damaged_why = e.what();
      }
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
    // A crash while a rotation wrote the header leaves a short one, holding nothing: its name is
    // all there is to say where it starts.
    const bool headerless = s.bytes.size() < logfmt::kSegmentHeaderBytes;
    const Lsn first = headerless ? it->first : s.header.first_lsn;
    if (!headerless && first != it->first) {
      fail(ErrorCode::LogCorrupt, "segment '", s.path, "' header says first lsn ", first,
           " but its name says ", it->first);
    }
    if (expected != 0 && first != expected) {
      fail(ErrorCode::LogCorrupt, "segment '", s.path, "' starts at lsn ", first, " but the log before it ends at lsn ",
           expected - 1, "; a segment is missing");
    }
    if (expected == 0 && first > base + 1) {
      if (damaged_lsn != 0) {  // it would have bridged the gap (the retention counted on it)
        fail(ErrorCode::LogCorrupt, damaged_why, "; no older checkpoint and log reach its lsn ", damaged_lsn,
             " (the log kept starts at lsn ", first, ")");
      }
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
    if (!last) check_sealed_segment(s);
    Lsn end = first;
    for (const ScannedRecord& r : s.records) end = r.header.first_lsn + r.header.lsn_count;
    expected = end;
    if (end > 0) recovered_.last_lsn = std::max(recovered_.last_lsn, end - 1);
    if (s.torn) {
      recovered_.truncated_tail = true;
      recovered_.tail_reason = tail_reason(s);
    }
    if (recovered_.segments.empty()) indexed_from_ = it->first;
    if (!read_only_) index_segment(records_, s);  // a read-only scan is replayed once, never looked up
    recovered_.segments.push_back(std::move(s));
    meter.advance();
  }
  meter.finish();
  if (recovered_.segments.empty()) indexed_from_ = base + 1;
  // The fallback must reach as far as the damaged checkpoint did: what lies between would be lost
  // without a word (or, with nothing else in the directory, a new bus would start beside it).
  if (damaged_lsn > recovered_.last_lsn) {
    fail(ErrorCode::LogCorrupt, damaged_why, "; no older checkpoint and log reach its lsn ", damaged_lsn,
         " (they end at lsn ", recovered_.last_lsn, ")");
  }
}

void Log::index_whole_log(const std::function<void(const ScannedRecord&, const std::string&)>& fn) {
  flush();
  std::uint64_t oldest = 0, n = 0;
  for (const std::string& name : list_directory(dir_)) {
    if (logfmt::parse_segment_file_name(name, n) && (oldest == 0 || n < oldest)) oldest = n;
  }
  if (oldest != 1) {
    fail(ErrorCode::HistoryUnavailable, "the log of '", dir_,
         "' no longer starts at lsn 1 (its oldest segment starts at lsn ", oldest,
         "; the retention removed the ones before), and reading it before lsn ", indexed_from_,
         " (where this bus began its index when it was opened) needs all of it");
  }
  Log all(dir_, durability_, Access::ReadOnly, 0);  // every segment, no checkpoint
  RecordIndex index;
  for (const SegmentScan& seg : all.recovered().segments) {
    index_segment(index, seg);
    for (const ScannedRecord& r : seg.records) {
      fn(r, "segment '" + seg.path + "' record at byte " + std::to_string(r.offset));
    }
  }
  records_ = std::move(index);
  indexed_from_ = 1;
}

void Log::read_records(std::span<const Lsn> lsns, const RecordIndex::Visit& visit) {
  flush();  // durability=none: the records may still be pending
  FileBytes file;
  std::uint64_t mapped = 0;  // the segment `file` holds (its first lsn; 0: none yet)
  std::string path;
  records_.for_each_record(lsns, [&](const RecordIndex::Location& at, std::span<const Lsn> held) {
    if (mapped != at.chunk) {
      path = dir_ + "/" + logfmt::segment_file_name(at.chunk);
      file = FileBytes(path, FileBytes::How::Lazy);  // under the commit lock nothing cuts it
      mapped = at.chunk;
    }
    const std::string where = "segment '" + path + "' record at byte " + std::to_string(at.offset);
    ScannedRecord r;
    std::string why;
    if (!check_record_at({file.data(), file.size()}, at.offset, at.first_lsn, r, why, Checksum::Skip)) {
      fail(ErrorCode::LogCorrupt, where, " is not the record the log's index expects there: ", why);
    }
    visit(r, held, where);
  });
}

}  // namespace mmsb
