#include "mmsb/log/LogFormat.hpp"

#include <bit>
#include <cstdio>

#include "mmsb/core/Crc32c.hpp"

namespace mmsb::logfmt {

static_assert(std::endian::native == std::endian::little,
              "the log format is little-endian; big-endian hosts need byte swapping here");

bool is_record_type(std::uint8_t t) noexcept {
  return t >= static_cast<std::uint8_t>(RecordType::PageCreate) &&
         t <= static_cast<std::uint8_t>(RecordType::Location);
}

std::uint32_t record_crc(std::span<const std::byte> rec) noexcept {
  const std::uint32_t c = crc32c(rec.data(), 4);
  return crc32c(rec.data() + 8, rec.size() - 8, c);
}

RecordBuilder::RecordBuilder(std::vector<std::byte>& out, RecordType type, std::uint32_t lsn_count,
                             std::uint64_t first_lsn)
    : out_(out), start_(out.size()), w_(out), type_(type), lsn_count_(lsn_count), first_lsn_(first_lsn) {
  out_.resize(start_ + kRecordHeaderBytes);  // the header, written by finish()
}

void RecordBuilder::finish(std::span<const std::byte> tail) {
  seal_record(out_, start_, type_, lsn_count_, first_lsn_, tail);
}

void seal_record(std::vector<std::byte>& buf, std::size_t start, RecordType type, std::uint32_t lsn_count,
                 std::uint64_t first_lsn, std::span<const std::byte> tail) {
  const std::size_t body = buf.size() - start - kRecordHeaderBytes + tail.size();
  if (body > kMaxRecordBody) {
    fail(ErrorCode::InvalidArgument, "a log record of ", body, " bytes exceeds the format limit of ",
         kMaxRecordBody, " bytes; split the batch");
  }
  std::byte* h = buf.data() + start;
  const auto len = static_cast<std::uint32_t>(body);
  const std::uint8_t head[4] = {static_cast<std::uint8_t>(type), 0, 0, 0};  // type, flags, reserved
  std::memcpy(h, &len, 4);
  std::memcpy(h + 8, head, 4);
  std::memcpy(h + 12, &lsn_count, 4);
  std::memcpy(h + 16, &first_lsn, 8);
  const std::uint32_t crc = record_crc({h, buf.size() - start});
  std::memcpy(h + 4, &crc, 4);
  if (tail.empty()) ByteWriter(buf).pad_to_align();  // may move buf: after the last use of h
}

namespace {
// Folds the tail into the CRC of the record seal_record() left open in `buf` (the one whose body
// runs past buf's end): `fold` maps its CRC so far to the CRC with the tail's bytes.
template <class Fold>
void fold_tail(std::vector<std::byte>& buf, Fold fold) noexcept {
  std::size_t at = 0;
  for (;;) {
    if (at + kRecordHeaderBytes > buf.size()) return;  // none: not a buffer seal_record left open
    std::uint32_t body = 0;
    std::memcpy(&body, buf.data() + at, 4);
    if (at + kRecordHeaderBytes + body > buf.size()) break;
    at += padded(kRecordHeaderBytes + body);
  }
  std::uint32_t crc = 0;
  std::memcpy(&crc, buf.data() + at + 4, 4);
  crc = fold(crc);
  std::memcpy(buf.data() + at + 4, &crc, 4);
}
}  // namespace

void seal_tail(std::vector<std::byte>& buf, std::span<const std::byte> tail) noexcept {
  if (tail.empty()) return;  // sealed whole (and padded) by seal_record
  fold_tail(buf, [&](std::uint32_t crc) { return crc32c(tail.data(), tail.size(), crc); });
}

void seal_tail_summed(std::vector<std::byte>& buf, std::uint32_t tail_crc, std::uint64_t tail_size) noexcept {
  if (tail_size == 0) return;
  fold_tail(buf, [&](std::uint32_t crc) { return crc32c_combine(crc, tail_crc, tail_size); });
}

void append_sync_mark(std::vector<std::byte>& out, std::uint64_t next_lsn, std::uint64_t synced_offset) {
  const std::size_t start = out.size();
  out.resize(start + kRecordHeaderBytes);
  ByteWriter(out).u64(synced_offset);
  seal_record(out, start, RecordType::SyncMark, 0, next_lsn);
}

std::vector<std::byte> encode_segment_header(const SegmentHeader& h) {
  std::vector<std::byte> out;
  ByteWriter w(out);
  w.bytes(kSegmentMagic, 8);
  w.u32(h.version);
  w.u32(static_cast<std::uint32_t>(kSegmentHeaderBytes));
  w.u64(h.first_lsn);
  w.u32(0);
  w.u32(crc32c(out.data(), out.size()));
  return out;
}

SegmentHeader decode_segment_header(std::span<const std::byte> bytes, const std::string& file) {
  ByteReader r(bytes, "segment " + file);
  const auto magic = r.bytes(8);
  if (std::memcmp(magic.data(), kSegmentMagic, 8) != 0) r.corrupt("not an mmsb segment (bad magic)");
  const std::uint32_t version = r.u32();
  if (version < kOldestFormatVersion || version > kFormatVersion) {
    r.corrupt("format version " + std::to_string(version) + " is not supported (this build reads " +
              std::to_string(kOldestFormatVersion) + " to " + std::to_string(kFormatVersion) + ")");
  }
  if (r.u32() != kSegmentHeaderBytes) r.corrupt("unexpected header size");
  SegmentHeader h;
  h.version = version;
  h.first_lsn = r.u64();
  r.u32();
  const std::uint32_t crc = r.u32();
  if (crc != crc32c(bytes.data(), kSegmentHeaderBytes - 4)) r.corrupt("header checksum mismatch");
  // A log at the largest lsn starts its next segment at the lsn after it: one that can hold only
  // records of no lsn, as a writer opening or checkpointing such a log makes.
  if (h.first_lsn > kMaxLsn + 1) {
    r.corrupt("first lsn " + std::to_string(h.first_lsn) + " is past the largest, 2^62, and the one after it");
  }
  return h;
}

namespace {
std::string numbered(const char* prefix, std::uint64_t n, const char* suffix) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%020llu%s", prefix, static_cast<unsigned long long>(n), suffix);
  return buf;
}
bool parse_numbered(std::string_view name, std::string_view prefix, std::string_view suffix,
                    std::uint64_t& n) {
  if (name.size() != prefix.size() + 20 + suffix.size()) return false;
  if (name.substr(0, prefix.size()) != prefix || name.substr(name.size() - suffix.size()) != suffix) return false;
  n = 0;
  for (char c : name.substr(prefix.size(), 20)) {
    if (c < '0' || c > '9') return false;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (n > (UINT64_MAX - digit) / 10) return false;
    n = n * 10 + digit;
  }
  return true;
}
}  // namespace

std::string segment_file_name(std::uint64_t first_lsn) { return numbered("seg-", first_lsn, ".log"); }
std::string checkpoint_file_name(std::uint64_t lsn) { return numbered("ckpt-", lsn, ".ckpt"); }
bool parse_segment_file_name(std::string_view name, std::uint64_t& first_lsn) {
  return parse_numbered(name, "seg-", ".log", first_lsn);
}
bool parse_checkpoint_file_name(std::string_view name, std::uint64_t& lsn) {
  return parse_numbered(name, "ckpt-", ".ckpt", lsn);
}

}  // namespace mmsb::logfmt
