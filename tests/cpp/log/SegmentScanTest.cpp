// Segment scanning as recovery uses it: a segment cut at any byte yields exactly the records that
// lie wholly before the cut (a torn tail, never an error); a damaged record that a later sync
// mark vouches for is corruption (LogCorrupt naming the file and offset), while damage in bytes
// never synced is a torn tail even with valid records after it (a power loss may keep later
// writes and lose earlier ones). Version-3 segments, which have no marks, keep the old rule: any
// valid record after the damage makes it corruption. The segment is written by mmsb::Log itself,
// so the framing under test is the real one.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/log/Log.hpp"
#include "mmsb/log/SegmentReader.hpp"

namespace mmsb {
namespace {

using test::Bytes;

struct Expected {
  std::uint64_t offset = 0;
  std::uint64_t end = 0;         // one past the body: what the CRC covers
  std::uint64_t padded_end = 0;  // where the next record starts
  Lsn first_lsn = 0;
  LogOp op;
};

class SegmentScanTest : public ::testing::Test {
 protected:
  static constexpr int kRecords = 30;

  void SetUp() override {
    bus_dir_ = dir_ / "bus";
    payloads_.reserve(kRecords);  // batch ops hold spans into these: no reallocation
    Log log(bus_dir_, Durability::Flush, Log::Access::Create);
    log.start_writing();
    std::uint64_t at = logfmt::kSegmentHeaderBytes;
    Lsn lsn = 1;
    for (int i = 0; i < kRecords; ++i) {
      Bytes rec;
      const LogOp op = make_op(i);
      // Every fifth record is a one-op transaction, so both framings are covered.
      if (i % 5 == 4) {
        encode_transaction_record(rec, lsn, std::span(&op, 1));
      } else {
        test::encode_single(rec, lsn, op);
      }
      const std::uint64_t body = test::header_at(rec, 0).body_bytes;
      expected_.push_back({at, at + logfmt::kRecordHeaderBytes + body, at + rec.size(), lsn, op});
      at += rec.size();
      lsn += op_lsn_count(op);
      log.append(rec, lsn - 1);
    }
    segment_ = test::segment_files(bus_dir_).at(0);
    image_ = test::read_file(segment_);
    ASSERT_EQ(image_.size(), at);
    log.close();  // syncs and appends a sync mark vouching for every record
    synced_image_ = test::read_file(segment_);
    ASSERT_GT(synced_image_.size(), at);
    test::write_file(segment_, image_);  // the tests start from the unsynced image
  }

  // Mixed kinds with bodies of every length mod 8, so every padding size occurs.
  LogOp make_op(int i) {
    const auto id = static_cast<PageId>(i + 1);
    switch (i % 6) {
      case 0: {
        PageSpec spec{static_cast<std::uint64_t>(64 + i), DType::Raw, {}, "p" + std::string(i % 8, 'x'), {}, "cpu"};
        spec.metadata["m"] = MetaValue{std::string(i % 3, '\0'), true};
        return PageCreateOp{id, spec};
      }
      case 1:
        return PageDeleteOp{id};
      case 2:
        return MetadataOp{id, std::string(1 + i % 7, 'k'), MetaValue{"v", false}};
      case 3: {
        Delta d = Delta::at(id, static_cast<std::uint64_t>(i), test::random_bytes(rng_, 1 + i % 9));
        d.timestamp_ns = static_cast<std::uint64_t>(i);
        return DeltaOp{d};
      }
      case 4: {
        const std::vector<std::uint64_t> offsets = {0, 20, 9};
        const std::vector<std::uint64_t> lengths = {3, static_cast<std::uint64_t>(i % 5), 2};
        return DeltaOp{Delta::runs(id, offsets, lengths, test::random_bytes(rng_, 5 + i % 5))};
      }
      default: {
        payloads_.push_back(test::random_bytes(rng_, 3 + i % 4));
        BatchOp b;
        b.page_ids = {id, id + 1};
        b.offsets = {0, 8};
        b.lengths = {1, 2 + static_cast<std::uint64_t>(i % 4)};
        b.payload = payloads_.back();
        return b;
      }
    }
  }

  // Checks that `scan` holds exactly expected_[0, n) and decodes them to the ops written.
  void expect_records(const SegmentScan& scan, std::size_t n, bool decode) {
    ASSERT_EQ(scan.records.size(), n);
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_EQ(scan.records[i].offset, expected_[i].offset);
      EXPECT_EQ(scan.records[i].header.first_lsn, expected_[i].first_lsn);
      if (decode) {
        const LogRecord rec = decode_record(scan.records[i].header, scan.records[i].body, "t");
        ASSERT_EQ(rec.ops.size(), 1u);
        EXPECT_TRUE(test::same_op(expected_[i].op, rec.ops[0])) << "record " << i;
      }
    }
  }

  test::TempDir dir_;
  test::Rng rng_{11};
  std::string bus_dir_;
  std::string segment_;
  Bytes image_;         // the records, never synced (no sync mark)
  Bytes synced_image_;  // the same after close(): a sync mark follows the records
  std::vector<Expected> expected_;
  std::vector<Bytes> payloads_;  // batch payloads are spans
};

TEST_F(SegmentScanTest, WholeSegmentScansClean) {
  const SegmentScan scan = scan_segment(segment_);
  EXPECT_FALSE(scan.torn) << scan.torn_reason;
  EXPECT_EQ(scan.header.first_lsn, 1u);
  EXPECT_EQ(scan.valid_end, image_.size());
  expect_records(scan, kRecords, /*decode=*/true);
}

TEST_F(SegmentScanTest, CutAtEveryByteKeepsTheWholeRecordsBeforeIt) {
  const std::string cut_path = dir_ / "cut.log";
  for (std::uint64_t cut = 0; cut <= image_.size(); ++cut) {
    SCOPED_TRACE("cut at byte " + std::to_string(cut));
    test::write_file(cut_path, std::span(image_).first(cut));
    SegmentScan scan;
    try {
      scan = scan_segment(cut_path);
    } catch (const Error& e) {
      FAIL() << "a cut segment must read as a torn tail, got: " << e.what();
    }
    if (cut < logfmt::kSegmentHeaderBytes) {
      EXPECT_TRUE(scan.torn);
      EXPECT_TRUE(scan.records.empty());
      continue;
    }
    // A record counts once its CRC-covered bytes are all there (its padding may be cut off).
    std::size_t whole = 0;
    while (whole < expected_.size() && expected_[whole].end <= cut) ++whole;
    const std::uint64_t last_end = whole == 0 ? logfmt::kSegmentHeaderBytes : expected_[whole - 1].padded_end;
    const bool at_boundary = cut <= last_end;
    expect_records(scan, whole, /*decode=*/at_boundary);
    EXPECT_EQ(scan.valid_end, std::min(cut, last_end));
    EXPECT_EQ(scan.torn, !at_boundary) << scan.torn_reason;
    if (scan.torn) {
      EXPECT_NE(scan.torn_reason.find("at byte " + std::to_string(last_end)), std::string::npos)
          << scan.torn_reason;
    }
  }
}

// One bit in the header and one in the body of each record; calls check(record, damaged image).
template <class Check>
void damage_each_record(const Bytes& image, const std::vector<Expected>& expected, test::Rng& rng, Check&& check) {
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const Expected& e = expected[i];
    for (const std::uint64_t byte : {e.offset + test::uniform(rng, 0, logfmt::kRecordHeaderBytes - 1),
                                     test::uniform(rng, e.offset + logfmt::kRecordHeaderBytes, e.end - 1)}) {
      SCOPED_TRACE("record " + std::to_string(i) + ", byte " + std::to_string(byte));
      Bytes bad = image;
      test::flip_bit(bad, byte * 8 + test::uniform(rng, 0, 7));
      check(i, bad);
    }
  }
}

TEST_F(SegmentScanTest, DamageASyncMarkVouchesForIsCorruption) {
  const std::string bad_path = dir_ / "bad.log";
  damage_each_record(synced_image_, expected_, rng_, [&](std::size_t i, const Bytes& bad) {
    test::write_file(bad_path, bad);
    const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { scan_segment(bad_path); });
    EXPECT_NE(msg.find(bad_path), std::string::npos) << msg;
    EXPECT_NE(msg.find("at byte " + std::to_string(expected_[i].offset)), std::string::npos) << msg;
    // Report: the same message, and every record before the damage (what `mmsb inspect` shows).
    const SegmentScan partial = scan_segment(bad_path, false, OnDamage::Report);
    EXPECT_EQ(partial.damage, msg);
    EXPECT_FALSE(partial.torn);
    expect_records(partial, i, /*decode=*/true);
  });
  // The mark itself damaged: it vouched for nothing after it, so it is a torn tail.
  Bytes bad = synced_image_;
  test::flip_bit(bad, (image_.size() + 30) * 8);
  test::write_file(bad_path, bad);
  const SegmentScan scan = scan_segment(bad_path);
  EXPECT_TRUE(scan.torn);
  expect_records(scan, expected_.size(), /*decode=*/true);
  EXPECT_EQ(scan.valid_end, image_.size());
}

// Group commit writes a record with a mark saying "synced up to here", the record's own offset:
// the mark does not vouch for the record after it. If a power loss keeps the mark and tears the
// record, that is a torn tail, not damage the mark vouches for.
TEST_F(SegmentScanTest, AMarkEndingWhereTheDamagedRecordStartsDoesNotVouchForIt) {
  const Expected& last = expected_.back();
  Bytes bad = image_;
  logfmt::append_sync_mark(bad, last.first_lsn + op_lsn_count(last.op), /*synced_offset=*/last.offset);
  test::flip_bit(bad, (last.offset + logfmt::kRecordHeaderBytes) * 8 + 1);
  const std::string bad_path = dir_ / "bad.log";
  test::write_file(bad_path, bad);
  SegmentScan scan;
  ASSERT_NO_THROW(scan = scan_segment(bad_path));
  EXPECT_TRUE(scan.torn);
  expect_records(scan, expected_.size() - 1, /*decode=*/false);
}

TEST_F(SegmentScanTest, UnsyncedDamageIsATornTailEvenBeforeValidRecords) {
  const std::string bad_path = dir_ / "bad.log";
  damage_each_record(image_, expected_, rng_, [&](std::size_t i, const Bytes& bad) {
    test::write_file(bad_path, bad);
    SegmentScan scan;
    ASSERT_NO_THROW(scan = scan_segment(bad_path));
    EXPECT_TRUE(scan.torn);
    expect_records(scan, i, /*decode=*/false);
    EXPECT_EQ(scan.valid_end, expected_[i].offset);
    EXPECT_EQ(scan.unsynced_records_after, i + 1 < expected_.size());
    if (scan.unsynced_records_after) {
      EXPECT_NE(tail_reason(scan).find("never synced"), std::string::npos) << tail_reason(scan);
    }
  });
}

TEST_F(SegmentScanTest, VersionThreeSegmentsKeepTheStrictRule) {
  const std::string bad_path = dir_ / "bad.log";
  Bytes old = image_;
  logfmt::SegmentHeader h{expected_[0].first_lsn, 3};
  const Bytes header = logfmt::encode_segment_header(h);
  std::copy(header.begin(), header.end(), old.begin());
  ASSERT_EQ(logfmt::decode_segment_header(old, "old").version, 3u);
  damage_each_record(old, expected_, rng_, [&](std::size_t i, const Bytes& bad) {
    test::write_file(bad_path, bad);
    if (i + 1 == expected_.size()) {
      SegmentScan scan;
      ASSERT_NO_THROW(scan = scan_segment(bad_path));
      EXPECT_TRUE(scan.torn);
      expect_records(scan, i, /*decode=*/false);
    } else {
      const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { scan_segment(bad_path); });
      EXPECT_NE(msg.find("at byte " + std::to_string(expected_[i].offset)), std::string::npos) << msg;
    }
  });
}

TEST_F(SegmentScanTest, GarbageTailIsTornAndZeroTailIsTheEnd) {
  // File systems may leave a crashed append as stale blocks after the last record: torn. Zeros to
  // the end of the file (an fsync writer's preallocation, or a lost append) are no record at all.
  for (const bool zeros : {false, true}) {
    Bytes tail = zeros ? Bytes(4096) : test::random_bytes(rng_, 333);
    if (!zeros) tail[0] = std::byte{1};  // not all zero
    Bytes grown = image_;
    grown.insert(grown.end(), tail.begin(), tail.end());
    test::write_file(segment_, grown);
    const SegmentScan scan = scan_segment(segment_);
    EXPECT_EQ(scan.torn, !zeros) << scan.torn_reason;
    EXPECT_EQ(scan.valid_end, image_.size());
    expect_records(scan, kRecords, /*decode=*/true);
  }
  // Zeros with one stray byte near the end: a torn tail, not an end.
  Bytes grown = image_;
  grown.resize(image_.size() + 4096);
  grown.back() = std::byte{9};
  test::write_file(segment_, grown);
  EXPECT_TRUE(scan_segment(segment_).torn);
}

// A tail crafted with a plausible record header every 24 bytes, each claiming a body that runs to
// the end of the file with a wrong checksum: telling torn from damaged would checksum the rest
// of the file at each header (quadratic). The bodies checksummed in search of a record are
// capped; sync marks, which alone decide since version 4, are still looked for past the cap: the
// tail is torn, or damage when a mark after it vouches for it. Before version 4 any record
// decides, so past the cap the scan cannot tell, which is damage (nothing is cut).
TEST_F(SegmentScanTest, ATailOfPlausibleHeadersIsCappedNotScannedQuadratically) {
  const auto crafted = [&](bool plausible, bool marked, std::uint32_t version) {
    Bytes grown = image_;
    if (version != logfmt::kFormatVersion) {
      const Bytes header = logfmt::encode_segment_header(logfmt::SegmentHeader{expected_[0].first_lsn, version});
      std::copy(header.begin(), header.end(), grown.begin());
    }
    const std::uint64_t start = grown.size();
    grown.resize(start + (std::uint64_t{8} << 20));
    for (std::uint64_t q = start; q + logfmt::kRecordHeaderBytes <= grown.size(); q += 24) {
      const auto body = static_cast<std::uint32_t>(grown.size() - q - logfmt::kRecordHeaderBytes);
      const std::uint32_t crc = 0xDEADBEEF;
      const std::uint8_t type = plausible ? static_cast<std::uint8_t>(logfmt::RecordType::Delta) : 0xEE;
      const std::uint32_t lsn_count = 1;
      const std::uint64_t lsn = std::uint64_t{1} << 40;
      std::memcpy(grown.data() + q, &body, 4);
      std::memcpy(grown.data() + q + 4, &crc, 4);
      std::memcpy(grown.data() + q + 8, &type, 1);
      std::memcpy(grown.data() + q + 12, &lsn_count, 4);
      std::memcpy(grown.data() + q + 16, &lsn, 8);
    }
    if (marked) logfmt::append_sync_mark(grown, std::uint64_t{1} << 41, /*synced_offset=*/grown.size());
    test::write_file(segment_, grown);
    return start;
  };
  for (const bool plausible : {true, false}) {
    SCOPED_TRACE(plausible ? "plausible headers" : "headers of no record type");
    crafted(plausible, false, logfmt::kFormatVersion);
    const SegmentScan scan = scan_segment(segment_);
    EXPECT_TRUE(scan.torn);
    EXPECT_FALSE(scan.unsynced_records_after);
    expect_records(scan, kRecords, /*decode=*/true);
  }
  const std::uint64_t start = crafted(true, true, logfmt::kFormatVersion);
  std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { scan_segment(segment_); });
  EXPECT_NE(msg.find("a sync mark follows"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at byte " + std::to_string(start)), std::string::npos) << msg;
  crafted(true, false, 3);
  msg = test::expect_error(ErrorCode::LogCorrupt, [&] { scan_segment(segment_); });
  EXPECT_NE(msg.find("too many record headers"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at byte " + std::to_string(start)), std::string::npos) << msg;
}

// Ordinary page data can look like record headers almost everywhere: in an array of small int32
// values the body length, type, flags and lsn fields pass the cheap checks at most offsets. A
// crash that tears the record holding it is a torn tail, however large the array.
TEST_F(SegmentScanTest, ATornRecordOfSmallIntegersIsATornTail) {
  Bytes grown = image_;
  const std::uint64_t start = grown.size();
  grown.resize(start + (std::uint64_t{4} << 20));
  for (std::uint64_t q = start, i = 0; q + 4 <= grown.size(); q += 4, ++i) {
    const auto label = static_cast<std::uint32_t>(1 + i % 9);
    std::memcpy(grown.data() + q, &label, 4);
  }
  test::write_file(segment_, grown);
  SegmentScan scan;
  ASSERT_NO_THROW(scan = scan_segment(segment_));
  EXPECT_TRUE(scan.torn);
  EXPECT_EQ(scan.valid_end, start);
  expect_records(scan, kRecords, /*decode=*/true);
}

TEST_F(SegmentScanTest, ReaderResumesAtAnyRecordOffset) {
  for (const Expected& e : expected_) {
    ScannedRecord rec;
    std::string why;
    ASSERT_TRUE(check_record_at(image_, e.offset, e.first_lsn, rec, why)) << why;
    EXPECT_EQ(rec.offset, e.offset);
    EXPECT_FALSE(check_record_at(image_, e.offset, e.first_lsn + 1, rec, why)) << "lsn not checked";
    // Not at a record start: never accepted, never read out of bounds.
    EXPECT_FALSE(check_record_at(image_, e.offset + 8 < image_.size() ? e.offset + 8 : e.offset + 1,
                                 e.first_lsn, rec, why));
  }
  ScannedRecord rec;
  std::string why;
  EXPECT_FALSE(check_record_at(image_, image_.size(), 1, rec, why));
  EXPECT_FALSE(check_record_at(image_, image_.size() - 3, 1, rec, why));
}

// check_record_at promises never to read out of bounds, for any position it is given. The bytes
// end exactly at an inaccessible page, so any read past them faults in every build, not only
// under ASan. (No fixture: a fault here must not leave a temp directory behind.)
TEST(SegmentScanBoundsTest, CheckRecordAtPastTheEndIsRejected) {
  Bytes record;
  encode_op_record(record, 1, Delta::at(1, 0, test::bytes_of("0123456789abcdef")));
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  void* map = ::mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  ASSERT_EQ(::mprotect(static_cast<std::byte*>(map) + page, page, PROT_NONE), 0);
  const std::span<std::byte> bytes(static_cast<std::byte*>(map) + page - record.size(), record.size());
  std::memcpy(bytes.data(), record.data(), record.size());
  ScannedRecord rec;
  std::string why;
  EXPECT_TRUE(check_record_at(bytes, 0, 1, rec, why)) << why;
  EXPECT_FALSE(check_record_at(bytes, bytes.size(), 1, rec, why));
  EXPECT_FALSE(check_record_at(bytes, bytes.size() + 1, 1, rec, why));
  EXPECT_FALSE(check_record_at(bytes, bytes.size() + 8, 1, rec, why));
  ::munmap(map, 2 * page);
}

TEST_F(SegmentScanTest, DamagedHeaderIsCorruptionNamingTheFile) {
  Bytes bad = image_;
  bad[0] = std::byte{'X'};
  test::write_file(segment_, bad);
  const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { scan_segment(segment_); });
  EXPECT_NE(msg.find(segment_), std::string::npos) << msg;
}

// The writer resumes a segment that crashed inside a record's zero padding: the record is whole
// (its CRC bytes are all there), and whatever is appended after the reopen must be found by the
// next scan at the 8-aligned offset where readers look for it.
TEST_F(SegmentScanTest, AppendAfterReopenOfSegmentCutInsidePadding) {
  std::size_t k = 0;
  while (expected_[k].padded_end - expected_[k].end < 2) ++k;  // a record with >= 2 pad bytes
  const std::uint64_t cut = expected_[k].end + 1;
  test::write_file(segment_, std::span(image_).first(cut));
  Lsn next = expected_[k].first_lsn + op_lsn_count(expected_[k].op);
  {
    Log log(bus_dir_, Durability::Flush, Log::Access::Open);
    ASSERT_EQ(log.recovered().segments.size(), 1u);
    EXPECT_EQ(log.recovered().segments[0].records.size(), k + 1);
    EXPECT_EQ(log.recovered().last_lsn, next - 1);
    log.start_writing();
    Bytes rec;
    encode_op_record(rec, next, PageDeleteOp{77});
    log.append(rec, next);
  }
  const SegmentScan scan = scan_segment(segment_);
  EXPECT_FALSE(scan.torn) << scan.torn_reason;
  ASSERT_EQ(scan.records.size(), k + 2) << "the record appended after the reopen is lost";
  EXPECT_EQ(scan.records.back().header.first_lsn, next);
  EXPECT_EQ(scan.records.back().offset, expected_[k].padded_end);
}

}  // namespace
}  // namespace mmsb
