#pragma once
/// The on-disk format of a bus directory: segment files of framed records, and checkpoint files.
/// Byte-by-byte description: docs/format.md. All integers are little-endian; every record starts
/// at a multiple of 8 bytes and is padded with zeros to the next one.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/core/Utf8.hpp"

namespace mmsb::logfmt {

/// Version 7 adds to a Wave op the pages it left stale because their Python function was missing.
/// Version 6 changes what a wave visits, so that replay repeats it: only what the commit's
/// changes reach (bus.propagate(): every stale page too), and the derived control children of
/// pages changed in it (recomputed there, not only marked stale). Version 5 adds Location records (type 13: a page moved between host and device memory);
/// version 4 adds Wave ops (type 11, inside transactions) and the checkpoint's stale list, so
/// replay reproduces stale marks; version 3 writes batches as PackedBatch records (type 10);
/// versions 1 and 2 wrote Batch (5), which is still read. Version 1 lacks the graph records and
/// the checkpoint graph section.
inline constexpr std::uint32_t kFormatVersion = 7;
/// First version whose Wave ops name the pages they skipped for a missing Python function (so
/// replay leaves them stale, memos unchanged, as the live wave did).
inline constexpr std::uint32_t kSkippedWavesVersion = 7;
/// First version whose waves visit only what they reach (see kFormatVersion).
inline constexpr std::uint32_t kScopedWavesVersion = 6;
/// First version whose logs and checkpoints record stale marks.
inline constexpr std::uint32_t kStaleMarksVersion = 4;
/// Oldest version still read.
inline constexpr std::uint32_t kOldestFormatVersion = 1;
inline constexpr char kSegmentMagic[8] = {'M', 'M', 'S', 'B', 'S', 'E', 'G', '\0'};
inline constexpr char kCheckpointMagic[8] = {'M', 'M', 'S', 'B', 'C', 'K', 'P', '\0'};
inline constexpr char kCheckpointEndMagic[8] = {'M', 'M', 'S', 'B', 'C', 'E', 'N', 'D'};
/// The largest lsn a log holds. Far past any real log (2^62 commits), it keeps lsn arithmetic
/// (first + count, next lsn) from wrapping: a crafted checkpoint or segment naming a larger one is
/// corruption, and a commit that would pass it is refused.
inline constexpr std::uint64_t kMaxLsn = std::uint64_t{1} << 62;
inline constexpr std::size_t kSegmentHeaderBytes = 32;
inline constexpr std::size_t kRecordHeaderBytes = 24;
inline constexpr std::size_t kCheckpointHeaderBytes = 48;
inline constexpr std::size_t kCheckpointTrailerBytes = 16;
inline constexpr std::size_t kAlign = 8;
/// Largest record body: the length field is 32 bits. Bigger batches must be split by the caller.
inline constexpr std::uint64_t kMaxRecordBody = 0xFFFF'FFF0ull;

enum class RecordType : std::uint8_t {
  PageCreate = 1,
  PageDelete = 2,
  Metadata = 3,
  Delta = 4,
  Batch = 5,
  Transaction = 6,
  Edge = 7,
  Depend = 8,
  Derived = 9,
  PackedBatch = 10,  ///< a batch with narrowed columns (format version 3)
  Wave = 11,         ///< where a propagation wave ran, inside a transaction (format version 4)
  SyncMark = 12,     ///< takes no lsn: the segment's bytes before it say were durable (version 4)
  Location = 13,     ///< a page moved to another location (format version 5)
};
bool is_record_type(std::uint8_t t) noexcept;

inline constexpr std::uint64_t padded(std::uint64_t n) noexcept { return (n + kAlign - 1) / kAlign * kAlign; }

/// Appends little-endian fields to a byte vector.
class ByteWriter {
 public:
  explicit ByteWriter(std::vector<std::byte>& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(static_cast<std::byte>(v)); }
  void u16(std::uint16_t v) { put(v); }
  void u32(std::uint32_t v) { put(v); }
  void u64(std::uint64_t v) { put(v); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// GCC 12 reports a bogus overflow for vector::insert into an empty vector (GCC bug 107852).
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
  void bytes(std::span<const std::byte> b) { out_.insert(out_.end(), b.begin(), b.end()); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  void bytes(const void* p, std::size_t n) { bytes({static_cast<const std::byte*>(p), n}); }
  /// Appends `n` zero bytes and returns them, to be filled in place: one resize for fields of a
  /// known total size, where a call per field costs several times the instructions.
  std::byte* extend(std::size_t n) {
    const std::size_t at = out_.size();
    out_.resize(at + n);
    return out_.data() + at;
  }
  /// u32 length + bytes.
  void str(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    bytes(s.data(), s.size());
  }
  void pad_to_align() { out_.resize(padded(out_.size())); }  // one call, not a push per byte
  std::size_t size() const noexcept { return out_.size(); }

 private:
  template <class T>
  void put(T v) {  // engine targets are little-endian (checked in LogFormat.cpp)
    std::byte b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    bytes(b, sizeof(T));  // through bytes(): it carries the GCC 107852 workaround
  }
  std::vector<std::byte>& out_;
};

/// Reads little-endian fields from untrusted bytes. Every read is bounds-checked first and
/// throws Error(LogCorrupt) naming `what_` and the offset when the input is too short.
class ByteReader {
 public:
  ByteReader(std::span<const std::byte> in, std::string what) : in_(in), what_(std::move(what)) {}
  std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)[0]); }
  std::uint16_t u16() { return get<std::uint16_t>(); }
  std::uint32_t u32() { return get<std::uint32_t>(); }
  std::uint64_t u64() { return get<std::uint64_t>(); }
  std::span<const std::byte> bytes(std::uint64_t n) { return take(n); }
  std::string str() {
    const std::uint32_t n = u32();
    const auto b = take(n);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
  /// str() of a field the format says is UTF-8 (names, keys, text values, locations): anything
  /// else is corruption, not a string handed on to fail in Python's decoder.
  std::string text(std::string_view field) {
    std::string s = str();
    if (!is_utf8(s)) corrupt(std::string(field) + " is not UTF-8 text");
    return s;
  }
  void skip_to_align() { take((kAlign - pos_ % kAlign) % kAlign); }
  std::size_t pos() const noexcept { return pos_; }
  std::size_t remaining() const noexcept { return in_.size() - pos_; }
  [[noreturn]] void corrupt(std::string_view why) const {
    fail(ErrorCode::LogCorrupt, what_, " at byte ", pos_, ": ", why);
  }

 private:
  template <class T>
  T get() {
    T v;
    std::memcpy(&v, take(sizeof(T)).data(), sizeof(T));
    return v;
  }
  std::span<const std::byte> take(std::uint64_t n) {
    if (n > remaining()) corrupt("needs " + std::to_string(n) + " more bytes, has " + std::to_string(remaining()));
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  std::span<const std::byte> in_;
  std::string what_;
  std::size_t pos_ = 0;
};

/// Fixed part of every record.
struct RecordHeader {
  std::uint32_t body_bytes = 0;
  std::uint32_t crc = 0;
  RecordType type = RecordType::Delta;
  std::uint32_t lsn_count = 0;
  std::uint64_t first_lsn = 0;
};

/// Builds one framed record in place at the end of `out`: begin() writes the header, the caller
/// appends the body through writer(), finish() fills in the length and the CRC32C (over header
/// and body) and pads with zeros. The body is never copied twice.
class RecordBuilder {
 public:
  RecordBuilder(std::vector<std::byte>& out, RecordType type, std::uint32_t lsn_count,
                std::uint64_t first_lsn);
  ByteWriter& writer() noexcept { return w_; }
  /// Seals the record. With a `tail` (see seal_record) the body ends with those bytes, left where
  /// they are: the caller writes them, then the padding, after `out`.
  void finish(std::span<const std::byte> tail = {});

 private:
  std::vector<std::byte>& out_;
  std::size_t start_;
  ByteWriter w_;
  RecordType type_;
  std::uint32_t lsn_count_;
  std::uint64_t first_lsn_;
};

/// Frames a record whose header space buf[start, start + 24) was reserved before its body was
/// appended up to the end of `buf`: writes the header (length, CRC, type, lsn count, first lsn)
/// and pads with zeros. Throws Error(InvalidArgument) for a body over kMaxRecordBody.
/// With a non-empty `tail`, the body is buf's bytes after the header followed by `tail`, whose
/// bytes are never copied (a batch's payload): nothing is padded, so the record is
/// buf[start, end) + tail + tail_padding(...) zero bytes, and the CRC stored covers buf's bytes
/// only until seal_tail() folds the tail's in, which the writer of the record does (the log,
/// on its writer thread when it overlaps the write with the apply).
void seal_record(std::vector<std::byte>& buf, std::size_t start, RecordType type, std::uint32_t lsn_count,
                 std::uint64_t first_lsn, std::span<const std::byte> tail = {});
/// Completes the CRC of the last record in `buf`, which seal_record() sealed with `tail`: folds
/// the tail's bytes into it where they lie (an empty tail: nothing to do, the record is whole).
/// Once per record, before it is written anywhere.
void seal_tail(std::vector<std::byte>& buf, std::span<const std::byte> tail) noexcept;
/// seal_tail() from the tail's own CRC32C (crc32c(tail), computed apart, maybe on another thread
/// while the record was being built) and its size: the same CRC, without a pass over the tail.
void seal_tail_summed(std::vector<std::byte>& buf, std::uint32_t tail_crc, std::uint64_t tail_size) noexcept;
/// Zero bytes that follow the tail of a record sealed with one: `record_bytes` (header, body
/// in buf and tail) up to a multiple of kAlign.
inline std::size_t tail_padding(std::size_t record_bytes) noexcept { return padded(record_bytes) - record_bytes; }
/// Appends a SyncMark record: it takes no lsn (`next_lsn` is the lsn the record after it
/// carries) and says that bytes [0, synced_offset) of its segment had been fdatasync'ed when it
/// was written, which is what tells damage in synced bytes (corruption) from unsynced writes that
/// a power loss kept out of order (a torn tail). Body: u64 synced_offset.
void append_sync_mark(std::vector<std::byte>& out, std::uint64_t next_lsn, std::uint64_t synced_offset);
/// First version whose segments carry SyncMark records.
inline constexpr std::uint32_t kSyncMarksVersion = 4;
/// CRC a framed record must carry: over bytes [0,4) and [8, 24 + body) of the record.
std::uint32_t record_crc(std::span<const std::byte> record_without_padding) noexcept;

/// Segment file header.
struct SegmentHeader {
  std::uint64_t first_lsn = 0;
  std::uint32_t version = kFormatVersion;  ///< of the writer that started the segment
};
std::vector<std::byte> encode_segment_header(const SegmentHeader& h);
/// Throws Error(LogCorrupt) naming `file` for a bad magic, version or CRC.
SegmentHeader decode_segment_header(std::span<const std::byte> bytes, const std::string& file);

/// File names: seg-<first lsn, 20 digits>.log and ckpt-<lsn, 20 digits>.ckpt sort by lsn.
std::string segment_file_name(std::uint64_t first_lsn);
std::string checkpoint_file_name(std::uint64_t lsn);
/// Parses a name made by the functions above; false for any other file.
bool parse_segment_file_name(std::string_view name, std::uint64_t& first_lsn);
bool parse_checkpoint_file_name(std::string_view name, std::uint64_t& lsn);

}  // namespace mmsb::logfmt
