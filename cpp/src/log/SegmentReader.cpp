#include "mmsb/log/SegmentReader.hpp"

#include <fcntl.h>

#include <algorithm>
#include <optional>
#include <sstream>

#include "mmsb/core/Error.hpp"
#include "mmsb/log/PosixFile.hpp"

namespace mmsb {
namespace {

template <class T>
T load(std::span<const std::byte> b, std::uint64_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof(T));
  return v;
}

// What lies after a bad record at `bad`, scanning 8-aligned offsets: the first record that
// checks out with an lsn beyond `after_lsn`, and (with `want_mark`) the first SyncMark vouching
// for bytes past `bad`. The header's cheap fields are checked before any checksum. A file with a
// plausible header at every offset (crafted, or ordinary page data: an array of small integers
// passes the cheap checks almost everywhere) would make checksumming each claimed body
// quadratic, so only the bodies checksummed in search of a record are capped. Sync marks (8-byte
// bodies) are always checked: the scan stays linear, and since version 4 (`want_mark`) only a
// mark decides torn from damaged, so there the cap only ends the search for a record (shown in
// the message about the tail). Before version 4 any record decides: past the cap, `exhausted`
// says the answer is unknown.
struct AfterDamage {
  std::optional<std::uint64_t> record;
  std::optional<std::uint64_t> sync_mark;
  bool exhausted = false;
};

AfterDamage scan_after_damage(std::span<const std::byte> bytes, std::uint64_t bad, std::uint64_t after_lsn,
                              bool want_mark) {
  AfterDamage found;
  std::uint64_t budget = 2 * bytes.size() + (std::uint64_t{1} << 20);  // body bytes, records only
  bool searching = true;  // for a record that is not a mark
  for (std::uint64_t q = logfmt::padded(bad + logfmt::kAlign); q + logfmt::kRecordHeaderBytes <= bytes.size();
       q += logfmt::kAlign) {
    const std::uint64_t lsn = load<std::uint64_t>(bytes, q + 16);
    const auto body = load<std::uint32_t>(bytes, q);
    const auto type = load<std::uint8_t>(bytes, q + 8);
    const bool mark = type == static_cast<std::uint8_t>(logfmt::RecordType::SyncMark);
    if (lsn <= after_lsn || !logfmt::is_record_type(type) || load<std::uint8_t>(bytes, q + 9) != 0 ||
        load<std::uint16_t>(bytes, q + 10) != 0 || body > bytes.size() - q - logfmt::kRecordHeaderBytes ||
        (mark && body != 8) || (!mark && !searching)) {
      continue;  // cannot be a record (or only a SyncMark still matters)
    }
    if (!mark) {
      if (body > budget) {
        if (!want_mark) {
          found.exhausted = true;
          break;
        }
        searching = false;
        continue;
      }
      budget -= body;
    }
    ScannedRecord rec;
    std::string why;
    if (!check_record_at(bytes, q, lsn, rec, why)) continue;
    if (!found.record) found.record = q;
    searching = false;
    if (mark && load<std::uint64_t>(rec.body, 0) > bad) found.sync_mark = q;
    if (found.sync_mark || !want_mark) break;
  }
  return found;
}

}  // namespace

bool check_record_at(std::span<const std::byte> bytes, std::uint64_t pos, std::uint64_t expected_lsn,
                     ScannedRecord& out, std::string& why, Checksum checksum) {
  if (pos > bytes.size() || bytes.size() - pos < logfmt::kRecordHeaderBytes) {
    why = "incomplete record header at byte " + std::to_string(pos);
    return false;
  }
  logfmt::RecordHeader h;
  h.body_bytes = load<std::uint32_t>(bytes, pos);
  h.crc = load<std::uint32_t>(bytes, pos + 4);
  const auto type = load<std::uint8_t>(bytes, pos + 8);
  const auto flags = load<std::uint8_t>(bytes, pos + 9);
  const auto reserved = load<std::uint16_t>(bytes, pos + 10);
  h.lsn_count = load<std::uint32_t>(bytes, pos + 12);
  h.first_lsn = load<std::uint64_t>(bytes, pos + 16);
  if (h.body_bytes > bytes.size() - pos - logfmt::kRecordHeaderBytes) {
    why = "record length " + std::to_string(h.body_bytes) + " runs past the end of the file";
    return false;
  }
  const std::span<const std::byte> framed = bytes.subspan(pos, logfmt::kRecordHeaderBytes + h.body_bytes);
  if (checksum == Checksum::Verify && logfmt::record_crc(framed) != h.crc) {
    why = "checksum mismatch";
    return false;
  }
  if (!logfmt::is_record_type(type)) {
    why = "unknown record type " + std::to_string(type);
    return false;
  }
  if (flags != 0 || reserved != 0) {
    why = "nonzero flags or reserved bytes in a record header";
    return false;
  }
  if (h.first_lsn != expected_lsn) {
    why = "lsn " + std::to_string(h.first_lsn) + " where " + std::to_string(expected_lsn) + " was expected";
    return false;
  }
  if (h.first_lsn > logfmt::kMaxLsn + 1 || h.lsn_count > logfmt::kMaxLsn + 1 - h.first_lsn) {
    why = "lsns past the largest, 2^62";
    return false;
  }
  if (h.lsn_count == 0 && type != static_cast<std::uint8_t>(logfmt::RecordType::Transaction) &&
      type != static_cast<std::uint8_t>(logfmt::RecordType::SyncMark)) {
    why = "record takes no lsn";
    return false;
  }
  if (type == static_cast<std::uint8_t>(logfmt::RecordType::SyncMark) &&
      (h.lsn_count != 0 || h.body_bytes != 8 || load<std::uint64_t>(bytes, pos + logfmt::kRecordHeaderBytes) > pos)) {
    why = "bad sync mark";  // it takes no lsn and can only vouch for bytes before itself
    return false;
  }
  h.type = static_cast<logfmt::RecordType>(type);
  out = ScannedRecord{pos, h, framed.subspan(logfmt::kRecordHeaderBytes)};
  return true;
}

SegmentScan scan_segment(const std::string& path, bool sealed, OnDamage on_damage) {
  SegmentScan scan;
  scan.path = path;
  scan.bytes = FileBytes(path, sealed ? FileBytes::How::Map : FileBytes::How::Read);
  if (scan.bytes.size() < logfmt::kSegmentHeaderBytes) {
    // A crash while creating the segment leaves a short header: nothing was ever committed here.
    scan.torn = true;
    scan.torn_reason = "incomplete segment header";
    return scan;
  }
  scan.header = logfmt::decode_segment_header(scan.bytes, path);
  const std::span<const std::byte> bytes = scan.bytes;
  std::uint64_t pos = logfmt::kSegmentHeaderBytes;
  std::uint64_t next_lsn = scan.header.first_lsn;
  scan.valid_end = pos;
  while (pos < bytes.size()) {
    ScannedRecord rec;
    std::string why;
    if (!check_record_at(bytes, pos, next_lsn, rec, why)) {
      // Zeros to the end of the file: space an fsync writer wrote ahead (docs/format.md), or an
      // append whose data never reached the disk. Either way nothing was written there.
      if (std::all_of(bytes.begin() + static_cast<std::ptrdiff_t>(pos), bytes.end(),
                      [](std::byte b) { return b == std::byte{0}; })) {
        break;
      }
      const std::uint64_t before = next_lsn == 0 ? 0 : next_lsn - 1;
      const bool marked = scan.header.version >= logfmt::kSyncMarksVersion;
      const AfterDamage after = scan_after_damage(bytes, pos, before, marked);
      // Before version 4 any later record proves the bytes here were written before it; since,
      // only a SyncMark does (later records may be unsynced writes a power loss kept).
      const std::optional<std::uint64_t> proof = marked ? after.sync_mark : after.record;
      if (proof || after.exhausted) {
        std::ostringstream msg;
        msg << "segment '" << path << "' is corrupt at byte " << pos << ": " << why << ", but ";
        if (proof) {
          msg << (marked ? "a sync mark" : "a valid record") << " follows at byte " << *proof
              << (marked ? " saying these bytes were synced" : "");
        } else {
          msg << "the bytes after it hold too many record headers to tell a torn tail from damage";
        }
        msg << "; this is damage inside the log, not a torn tail (restore from a copy or a checkpoint)";
        if (on_damage == OnDamage::Throw) throw Error(ErrorCode::LogCorrupt, msg.str());
        scan.damage = msg.str();
        break;
      }
      scan.torn = true;
      scan.torn_reason = why + " at byte " + std::to_string(pos);
      scan.unsynced_records_after = after.record.has_value();
      break;
    }
    if (rec.header.type == logfmt::RecordType::SyncMark) {
      scan.synced_to = std::max(scan.synced_to, load<std::uint64_t>(rec.body, 0));
      pos = logfmt::padded(pos + logfmt::kRecordHeaderBytes + rec.header.body_bytes);
      scan.valid_end = std::min<std::uint64_t>(pos, bytes.size());
      continue;
    }
    scan.records.push_back(rec);
    next_lsn += rec.header.lsn_count;
    pos = logfmt::padded(pos + logfmt::kRecordHeaderBytes + rec.header.body_bytes);
    scan.valid_end = std::min<std::uint64_t>(pos, bytes.size());
  }
  return scan;
}

void check_sealed_segment(const SegmentScan& scan) {
  if (!scan.torn) return;
  fail(ErrorCode::LogCorrupt, "segment '", scan.path, "' is corrupt at byte ", scan.valid_end, " (",
       scan.torn_reason, ") and later segments exist, which were started only after it was synced; this is "
       "damage inside the log, not a torn tail (restore from a copy or a checkpoint)");
}

std::string tail_reason(const SegmentScan& scan) {
  std::string why = scan.torn_reason + " in " + scan.path;
  if (scan.unsynced_records_after) {
    why += "; the records after it were never synced (a power loss may keep later writes and lose earlier "
           "ones), so they were dropped with it";
  }
  return why;
}

}  // namespace mmsb
