#pragma once
/// Reads a segment file as untrusted input and classifies damage: a bad record with no valid
/// record after it is a torn tail (recovery truncates it); a bad record followed by a valid one is
/// corruption (Error(LogCorrupt) naming the file, the offset and what failed).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mmsb/log/LogFormat.hpp"
#include "mmsb/log/PosixFile.hpp"

namespace mmsb {

struct ScannedRecord {
  std::uint64_t offset = 0;  ///< of the record header in the file
  logfmt::RecordHeader header;
  std::span<const std::byte> body;  ///< into SegmentScan::bytes
};

struct SegmentScan {
  std::string path;
  logfmt::SegmentHeader header;
  FileBytes bytes;  ///< the whole file as read (records' bodies point into it)
  std::vector<ScannedRecord> records;
  std::uint64_t valid_end = 0;   ///< end (padded) of the last good record
  bool torn = false;             ///< bytes after valid_end that are not a good record
  std::string torn_reason;       ///< why the first bad byte range was rejected
};

/// Reads and checks `path`. Records must carry consecutive lsns starting at the header's
/// first_lsn. `sealed`: no writer will cut this file back (not the newest segment), so it may be
/// mapped instead of read. Throws Error(LogCorrupt) for a bad header or mid-segment corruption,
/// Error(Durability) if the file cannot be read.
SegmentScan scan_segment(const std::string& path, bool sealed = false);

/// Checks one record header and its CRC at `pos` of `bytes`, expecting `expected_lsn`. On success
/// fills `out` and returns true; else returns false with `why` set. Never reads out of bounds.
bool check_record_at(std::span<const std::byte> bytes, std::uint64_t pos, std::uint64_t expected_lsn,
                     ScannedRecord& out, std::string& why);

}  // namespace mmsb
