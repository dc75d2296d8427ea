#include "mmsb/log/SegmentReader.hpp"

#include <fcntl.h>

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

// Is there any record after a damaged one? Later records have larger lsns; scan 8-aligned
// offsets for a header that checks out with any lsn beyond `after_lsn`.
bool valid_record_after(std::span<const std::byte> bytes, std::uint64_t from, std::uint64_t after_lsn,
                        std::uint64_t& found_at) {
  for (std::uint64_t q = logfmt::padded(from); q + logfmt::kRecordHeaderBytes <= bytes.size(); q += logfmt::kAlign) {
    const std::uint64_t lsn = load<std::uint64_t>(bytes, q + 16);
    if (lsn <= after_lsn) continue;
    ScannedRecord rec;
    std::string why;
    if (check_record_at(bytes, q, lsn, rec, why)) {
      found_at = q;
      return true;
    }
  }
  return false;
}

}  // namespace

bool check_record_at(std::span<const std::byte> bytes, std::uint64_t pos, std::uint64_t expected_lsn,
                     ScannedRecord& out, std::string& why) {
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
  if (logfmt::record_crc(framed) != h.crc) {
    why = "checksum mismatch";
    return false;
  }
  if (!logfmt::is_record_type(type) || flags != 0 || reserved != 0) {
    why = "unknown record type " + std::to_string(type);
    return false;
  }
  if (h.first_lsn != expected_lsn) {
    why = "lsn " + std::to_string(h.first_lsn) + " where " + std::to_string(expected_lsn) + " was expected";
    return false;
  }
  if (h.lsn_count == 0 && type != static_cast<std::uint8_t>(logfmt::RecordType::Transaction)) {
    why = "record takes no lsn";
    return false;
  }
  h.type = static_cast<logfmt::RecordType>(type);
  out = ScannedRecord{pos, h, framed.subspan(logfmt::kRecordHeaderBytes)};
  return true;
}

SegmentScan scan_segment(const std::string& path, bool sealed) {
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
      std::uint64_t later = 0;
      if (valid_record_after(bytes, pos + logfmt::kAlign, next_lsn == 0 ? 0 : next_lsn - 1, later)) {
        fail(ErrorCode::LogCorrupt, "segment '", path, "' is corrupt at byte ", pos, ": ", why,
             ", but a valid record follows at byte ", later,
             "; this is damage inside the log, not a torn tail (restore from a copy or a checkpoint)");
      }
      scan.torn = true;
      scan.torn_reason = why + " at byte " + std::to_string(pos);
      break;
    }
    scan.records.push_back(rec);
    next_lsn += rec.header.lsn_count;
    pos = logfmt::padded(pos + logfmt::kRecordHeaderBytes + rec.header.body_bytes);
    scan.valid_end = std::min<std::uint64_t>(pos, bytes.size());
  }
  return scan;
}

}  // namespace mmsb
