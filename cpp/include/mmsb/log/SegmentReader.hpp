#pragma once
/// Reads a segment file as untrusted input and classifies damage. A bad record with no valid
/// record after it is a torn tail (recovery truncates it). A bad record followed by a valid one
/// is corruption (Error(LogCorrupt) naming the file, the offset and what failed) when the bytes
/// were synced: in a version-4 segment, when a later SyncMark says so; in older segments always.
/// Unsynced bytes followed by valid ones are a torn tail too: a power loss may keep later writes
/// and lose earlier ones (flush mode, or one group commit's records). Zero bytes from a record
/// boundary to the end of the file are no record and no damage: the segment ends there (an fsync
/// writer writes zeros ahead of its records; an append whose data was lost reads as zeros).
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
  std::vector<ScannedRecord> records;  ///< records that take lsns or carry ops (no SyncMarks)
  std::uint64_t valid_end = 0;   ///< end (padded) of the last good record (or SyncMark)
  std::uint64_t synced_to = 0;   ///< bytes before this were durable, as the SyncMarks read say
  bool torn = false;             ///< bytes after valid_end that are not a good record
  std::string torn_reason;       ///< why the first bad byte range was rejected, and where
  /// Valid records follow the torn tail: never synced, so cut with it (see the file comment).
  bool unsynced_records_after = false;
  /// With OnDamage::Report, why the scan stopped at mid-segment corruption (the message
  /// OnDamage::Throw throws); `records` then holds the good records before it. Empty otherwise.
  std::string damage;
};

/// What scan_segment does at mid-segment corruption: throw (recovery), or stop there and report
/// it in SegmentScan::damage with the records before it (`mmsb inspect`, which shows them).
enum class OnDamage : bool { Throw, Report };

/// Reads and checks `path`. Records must carry consecutive lsns starting at the header's
/// first_lsn. `sealed`: no writer will cut this file back (not the newest segment), so it may be
/// mapped instead of read. Throws Error(LogCorrupt) for a bad header, or for mid-segment
/// corruption unless `on_damage` is Report; Error(Durability) if the file cannot be read.
SegmentScan scan_segment(const std::string& path, bool sealed = false, OnDamage on_damage = OnDamage::Throw);

/// Recovery's rule for a segment that newer segments follow: it was synced whole before they
/// were started, so a torn tail in it is damage. Throws Error(LogCorrupt) naming the file and the
/// offset if `scan` is torn.
void check_sealed_segment(const SegmentScan& scan);
/// Why recovery cut the torn tail of the newest segment, for RecoveredLog::tail_reason.
std::string tail_reason(const SegmentScan& scan);

/// Skip: the header is checked but the CRC is not recomputed, for a lookup of a few rows of a
/// record that was checksummed when it was written or recovered (recomputing it reads it all).
enum class Checksum : bool { Verify, Skip };

/// Checks one record header and its CRC at `pos` of `bytes`, expecting `expected_lsn`. On success
/// fills `out` and returns true; else returns false with `why` set. Never reads out of bounds.
bool check_record_at(std::span<const std::byte> bytes, std::uint64_t pos, std::uint64_t expected_lsn,
                     ScannedRecord& out, std::string& why, Checksum checksum = Checksum::Verify);

}  // namespace mmsb
