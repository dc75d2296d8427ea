// Record codec: every op kind survives encode -> segment framing -> scan -> decode unchanged; the
// record CRC covers the whole header and body; and the decoder treats its input as hostile
// (garbage and truncated bodies raise LogCorrupt, never crash or throw anything else).
#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include <string>
#include <tuple>
#include <vector>

#include "TestUtil.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/core/Crc32c.hpp"
#include "mmsb/log/LogFormat.hpp"
#include "mmsb/log/RecordCodec.hpp"
#include "mmsb/log/SegmentReader.hpp"

namespace mmsb {
namespace {

using test::Bytes;

// One op of every kind and flavour the bus logs. Batch payloads are spans, so the fixture owns
// their bytes.
class LogCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PageCreateOp typed{7, PageSpec{24, DType::Float32, {2, 3}, "pos", {}, "cpu"}};
    typed.spec.metadata["unit"] = MetaValue{"m/s", false};
    typed.spec.metadata["blob"] = MetaValue{std::string("\0\xff\x01", 3), true};
    typed.spec.metadata[""] = MetaValue{"", false};  // empty key and value are legal
    ops_.push_back(typed);
    ops_.push_back(PageCreateOp{8, PageSpec{100, DType::Raw, {}, "", {}, "cpu"}});
    ops_.push_back(PageCreateOp{9, PageSpec{16, DType::Complex128, {}, "", {}, "cuda:1"}});
    ops_.push_back(PageDeleteOp{5});
    ops_.push_back(MetadataOp{7, "k", MetaValue{"v", false}});
    ops_.push_back(MetadataOp{7, "b", MetaValue{std::string("\0\x80", 2), true}});
    ops_.push_back(MetadataOp{7, "k", std::nullopt});
    for (Source s : {Source::User, Source::Propagation, Source::Replay, Source::Remote}) {
      const std::vector<std::uint64_t> offsets = {40, 3, 90, 10};
      const std::vector<std::uint64_t> lengths = {5, 4, 1, 7};
      Delta d = Delta::runs(8, offsets, lengths, test::random_bytes(rng_, 17));
      d.source = s;
      d.timestamp_ns = 1'700'000'000'000'000'000ull + static_cast<std::uint64_t>(s);
      ops_.push_back(DeltaOp{d});
    }
    ops_.push_back(DeltaOp{Delta::at(8, 99, {})});  // write() of no bytes still commits
    payload_ = test::random_bytes(rng_, 11);
    BatchOp batch;
    batch.timestamp_ns = 42;
    batch.page_ids = {8, 7, 8};
    batch.offsets = {0, 4, 0};
    batch.lengths = {3, 8, 0};
    batch.payload = payload_;
    ops_.push_back(batch);
    // The packed encodings: narrow columns with one length, and wide ids and offsets (past 2^32).
    uniform_payload_ = test::random_bytes(rng_, 3 * 64);
    ops_.push_back(BatchOp{43, {8, 7, 8}, {64, 0, 128}, {64, 64, 64}, uniform_payload_});
    ops_.push_back(BatchOp{44, {1ull << 33, 7}, {(1ull << 32) + 5, 1}, {2, 9}, payload_});
    // The graph: edges of each kind added (a data edge only by Depend) and removed, a recompute
    // of each kind.
    ops_.push_back(EdgeOp{7, 8, EdgeKind::Control, true});
    ops_.push_back(EdgeOp{7, 9, EdgeKind::DeviceSync, false});
    ops_.push_back(EdgeOp{8, 9, EdgeKind::Data, false});
    ops_.push_back(EdgeOp{6, 9, EdgeKind::DeviceSync, true});
    ops_.push_back(DependOp{8, {RecomputeKind::Copy, SemiringKind::SumProduct, ""}, {7}, {}});
    ops_.push_back(DependOp{9, {RecomputeKind::Reduce, SemiringKind::MinPlus, ""}, {7, 8, 7}, {0.5, -2.0, 1e300}});
    ops_.push_back(DependOp{10, {RecomputeKind::Callable, SemiringKind::SumProduct, "model.step"}, {8, 9}, {}});
    Delta derived = Delta::runs(9, std::vector<std::uint64_t>{0, 50}, std::vector<std::uint64_t>{4, 9},
                                test::random_bytes(rng_, 13));
    derived.source = Source::Propagation;
    derived.timestamp_ns = 77;
    ops_.push_back(DerivedOp{derived, {{7, 3}, {8, 1ull << 40}, {7, 3}}});
    ops_.push_back(DerivedOp{Delta::at(10, 0, {}), {}});
    // Moves: the bus refuses one inside a transaction, but the format reads it there too.
    ops_.push_back(LocationOp{9, "cuda:1"});
    ops_.push_back(LocationOp{9, "cpu"});
    // Wave ops travel inside transactions only: one of each flag combination the bus writes.
    waves_.push_back(WaveOp{false, true, false, false});
    waves_.push_back(WaveOp{true, false, false, false});
    waves_.push_back(WaveOp{true, true, true, false});
    waves_.push_back(WaveOp{false, true, true, true});
  }

  // The transaction record's ops: every op, then the wave ops.
  std::vector<LogOp> transaction_ops() const {
    std::vector<LogOp> all = ops_;
    all.insert(all.end(), waves_.begin(), waves_.end());
    return all;
  }

  // Every op but the wave ops as its own record, then one transaction holding all of them, framed
  // as a segment starting at lsn 1 and written to a file.
  std::string write_segment() {
    Bytes records;
    Lsn lsn = 1;
    for (const LogOp& op : ops_) {
      test::encode_single(records, lsn, op);
      lsn += op_lsn_count(op);
    }
    encode_transaction_record(records, lsn, transaction_ops());
    const std::string path = dir_ / "seg";
    test::write_file(path, test::segment_image(1, records));
    return path;
  }

  test::Rng rng_{7};
  test::TempDir dir_;
  std::vector<LogOp> ops_;
  std::vector<LogOp> waves_;
  Bytes payload_;
  Bytes uniform_payload_;
};

TEST_F(LogCodecTest, EveryOpRoundTripsThroughASegment) {
  const SegmentScan scan = scan_segment(write_segment());
  EXPECT_FALSE(scan.torn) << scan.torn_reason;
  EXPECT_EQ(scan.valid_end, scan.bytes.size());
  ASSERT_EQ(scan.records.size(), ops_.size() + 1);
  const std::vector<LogOp> in_transaction = transaction_ops();
  Lsn lsn = 1;
  for (std::size_t i = 0; i < scan.records.size(); ++i) {
    const ScannedRecord& r = scan.records[i];
    EXPECT_EQ(r.offset % logfmt::kAlign, 0u) << "record " << i << " is not 8-aligned";
    EXPECT_EQ(r.header.first_lsn, lsn);
    const LogRecord rec = decode_record(r.header, r.body, "test");
    const bool txn = i == ops_.size();
    EXPECT_EQ(rec.type == logfmt::RecordType::Transaction, txn);
    ASSERT_EQ(rec.ops.size(), txn ? in_transaction.size() : 1u);
    for (std::size_t k = 0; k < rec.ops.size(); ++k) {
      EXPECT_TRUE(test::same_op(txn ? in_transaction[k] : ops_[i], rec.ops[k])) << "record " << i << " op " << k;
    }
    lsn += r.header.lsn_count;
  }
  // The transaction takes one lsn per op, a batch one per row (rows 3 + 3 + 2 in 3 batches), a wave
  // op only when it says so (one of four).
  EXPECT_EQ(scan.records.back().header.lsn_count, ops_.size() - 3 + 8 + 1);
}

// What history reads without decoding whole records: the ops of a record through its framing,
// and a batch's rows in place, are exactly what decode_record gives.
TEST_F(LogCodecTest, SplitOpsAndBatchRowsReadWhatDecodeReads) {
  const SegmentScan scan = scan_segment(write_segment());
  for (const ScannedRecord& r : scan.records) {
    const LogRecord rec = decode_record(r.header, r.body, "rec");
    const std::vector<OpFrame> frames = split_ops(r.header, r.body, "rec");
    ASSERT_EQ(frames.size(), rec.ops.size());
    for (std::size_t k = 0; k < frames.size(); ++k) {
      EXPECT_EQ(frames[k].in_transaction, r.header.type == logfmt::RecordType::Transaction);
      EXPECT_EQ(frames[k].index, frames[k].in_transaction ? k : 0u);
      EXPECT_TRUE(test::same_op(rec.ops[k], decode_op(frames[k], "rec"))) << "op " << k;
      EXPECT_EQ(op_lsn_count(frames[k], "rec"), op_lsn_count(rec.ops[k])) << "op " << k;
      const auto* batch = std::get_if<BatchOp>(&rec.ops[k]);
      if (batch == nullptr) continue;
      logfmt::ByteReader reader(frames[k].body, "rec");
      const BatchRows rows(frames[k].type, reader);
      EXPECT_EQ(rows.timestamp_ns(), batch->timestamp_ns);
      ASSERT_EQ(rows.rows(), batch->page_ids.size());
      for (std::uint64_t i = 0; i < rows.rows(); ++i) {
        EXPECT_EQ(rows.page(i), batch->page_ids[i]) << "op " << k << " row " << i;
        EXPECT_EQ(rows.offset(i), batch->offsets[i]) << "op " << k << " row " << i;
        EXPECT_EQ(rows.length(i), batch->lengths[i]) << "op " << k << " row " << i;
      }
      // The reader is left at the payload, which is the rest of the body.
      EXPECT_EQ(reader.remaining(), batch->payload.size());
    }
  }
}

// 64-byte rows to small pages and offsets take 8 bytes of framing each (u32 id, u32 offset, one
// shared length), not 24: the log's size bounds durable batch throughput.
TEST_F(LogCodecTest, UniformNarrowBatchesTakeEightBytesPerRow) {
  std::vector<PageId> ids(1000);
  std::vector<std::uint64_t> offsets(1000), lengths(1000, 64);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = 1 + i % 97;
    offsets[i] = 64 * (i % 50);
  }
  const Bytes payload = test::random_bytes(rng_, 64 * 1000);
  Bytes out;
  encode_op_record(out, 1, DeltaBatchView{ids, offsets, lengths, payload}, 7);
  EXPECT_EQ(out.size(), logfmt::kRecordHeaderBytes + 24 + 8 + 1000 * 8 + payload.size());
}

// The file log writes a batch's payload from where it lies: the head encode_batch_record_head
// makes (its CRC completed over the payload by seal_tail), then the payload, then its padding,
// must be byte for byte the record encode_op_record makes, for every column encoding and payload
// size, after other records in the buffer too; sealed from the payload's CRC (seal_tail_summed),
// the head is the same.
TEST_F(LogCodecTest, BatchRecordHeadThenPayloadIsTheWholeRecord) {
  std::vector<BatchOp> batches;
  for (const LogOp& op : ops_) {
    if (const auto* b = std::get_if<BatchOp>(&op)) batches.push_back(*b);
  }
  std::vector<Bytes> payloads;
  for (int n = 0; n < 40; ++n) {  // random shapes: lengths uniform or not, ids and offsets narrow or wide
    const std::size_t rows = rng_() % 70;
    BatchOp b;
    b.timestamp_ns = rng_();
    std::uint64_t bytes = 0;
    const std::uint64_t same = rng_() % 9;
    for (std::size_t i = 0; i < rows; ++i) {
      b.page_ids.push_back(n % 3 == 0 ? rng_() : 1 + rng_() % 500);
      b.offsets.push_back(n % 4 == 0 ? rng_() : rng_() % 4096);
      b.lengths.push_back(n % 2 == 0 ? same : rng_() % 17);
      bytes += b.lengths.back();
    }
    payloads.push_back(test::random_bytes(rng_, bytes));
    batches.push_back(b);
  }
  for (std::size_t i = 0; i + 3 < batches.size(); ++i) batches[i + 3].payload = payloads[i];
  Bytes prior;  // another record first: the batch's then starts where that one's padding ends
  encode_op_record(prior, 1, PageDeleteOp{5});
  ASSERT_EQ(batches.size(), 43u);
  for (const BatchOp& b : batches) {
    for (const Bytes& before : {Bytes{}, prior}) {
      Bytes whole = before, head = before;
      encode_op_record(whole, 9, b.view(), b.timestamp_ns);
      encode_batch_record_head(head, 9, b.view(), b.timestamp_ns);
      // Sealed from the payload's own CRC (Log::sum_ahead's way): the same head.
      Bytes summed = head;
      logfmt::seal_tail_summed(summed, crc32c(b.payload.data(), b.payload.size()), b.payload.size());
      logfmt::seal_tail(head, b.payload);
      EXPECT_EQ(summed, head) << b.payload.size() << " payload bytes";
      ASSERT_LE(head.size(), whole.size());
      head.insert(head.end(), b.payload.begin(), b.payload.end());
      head.resize(head.size() + logfmt::tail_padding(head.size()), std::byte{0});
      EXPECT_EQ(head, whole) << b.page_ids.size() << " rows, " << b.payload.size() << " payload bytes";
    }
  }
}

// Format versions 1 and 2 wrote batches as type 5 with three u64 columns; they still decode.
TEST_F(LogCodecTest, VersionTwoBatchRecordsStillDecode) {
  Bytes body;
  logfmt::ByteWriter w(body);
  w.u64(99);  // timestamp
  w.u64(2);   // rows
  for (std::uint64_t v : {8ull, 7ull, 1ull, 4ull, 3ull, 2ull}) w.u64(v);  // ids, offsets, lengths
  w.bytes(payload_.data(), 5);
  logfmt::RecordHeader h;
  h.type = logfmt::RecordType::Batch;
  h.lsn_count = 2;
  h.first_lsn = 10;
  const LogRecord rec = decode_record(h, body, "v2");
  ASSERT_EQ(rec.ops.size(), 1u);
  const BatchOp want{99, {8, 7}, {1, 4}, {3, 2}, std::span<const std::byte>(payload_).first(5)};
  EXPECT_TRUE(test::same_op(LogOp{want}, rec.ops[0]));
  logfmt::ByteReader reader(body, "v2");
  const BatchRows rows(logfmt::RecordType::Batch, reader);
  ASSERT_EQ(rows.rows(), 2u);
  EXPECT_EQ(rows.page(1), 7u);
  EXPECT_EQ(rows.offset(1), 4u);
  EXPECT_EQ(rows.length(1), 2u);
}

TEST_F(LogCodecTest, PackedBatchFlagsAndReservedBytesAreChecked) {
  const Bytes payload = test::random_bytes(rng_, 8);
  const std::vector<PageId> ids = {3};
  const std::vector<std::uint64_t> offsets = {0}, lengths = {8};
  Bytes rec;
  encode_op_record(rec, 1, DeltaBatchView{ids, offsets, lengths, payload}, 7);
  logfmt::RecordHeader h;
  h.type = logfmt::RecordType::PackedBatch;
  h.lsn_count = 1;
  h.first_lsn = 1;
  const std::span<const std::byte> good(rec.data() + logfmt::kRecordHeaderBytes, rec.size() - logfmt::kRecordHeaderBytes);
  EXPECT_NO_THROW(decode_record(h, good, "packed"));
  for (std::size_t at : {16u, 17u, 23u}) {  // the flags byte, then reserved bytes
    Bytes body(good.begin(), good.end());
    body[at] = std::byte{0x80};
    const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { decode_record(h, body, "packed"); });
    EXPECT_NE(msg.find(at == 16 ? "flags" : "reserved"), std::string::npos) << msg;
  }
}

// Wave ops (format 4) live inside transactions and take 0 or 1 lsn as their flag says; their
// flags, reserved bytes and place are checked.
TEST_F(LogCodecTest, WaveOpsRoundTripAndAreChecked) {
  const auto decode_one = [](const Bytes& rec, const std::string& where) {
    const logfmt::RecordHeader h = test::header_at(rec, 0);
    return decode_record(h, std::span(rec).subspan(logfmt::kRecordHeaderBytes, h.body_bytes), where);
  };
  const WaveOp waves[] = {{false, true, false, false}, {true, false, false, false}, {true, true, true, false}};
  TransactionBuilder tb;
  tb.add(Delta::at(3, 0, test::random_bytes(rng_, 4)));
  for (const WaveOp& w : waves) tb.add(w);
  EXPECT_EQ(tb.lsn_count(), 1u);
  Bytes rec;
  tb.frame(rec, 5);
  const LogRecord got = decode_one(rec, "waves");
  ASSERT_EQ(got.ops.size(), 4u);
  EXPECT_EQ(got.lsn_count, 1u);
  for (std::size_t i = 0; i < 3; ++i) {
    const auto* w = std::get_if<WaveOp>(&got.ops[i + 1]);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->deferred, waves[i].deferred);
    EXPECT_EQ(w->wave, waves[i].wave);
    EXPECT_EQ(w->propagate, waves[i].propagate);
    EXPECT_FALSE(w->takes_lsn);
    EXPECT_EQ(op_lsn_count(got.ops[i + 1]), 0u);
  }
  // A propagate() that only cleared stale marks: the record's one lsn.
  tb.add(WaveOp{false, true, true, true});
  Bytes alone;
  tb.frame(alone, 6);
  EXPECT_EQ(test::header_at(alone, 0).lsn_count, 1u);
  EXPECT_TRUE(std::get<WaveOp>(decode_one(alone, "alone").ops.at(0)).takes_lsn);
  // The op's body starts after the record header, the op count and the op's own header.
  const std::size_t flags_at = logfmt::kRecordHeaderBytes + 8 + 8;
  for (const auto& [at, value, what] : {std::tuple{flags_at, 0x20, "flags"}, std::tuple{flags_at, 0x0d, "mode change"},
                                        std::tuple{flags_at, 0x10, "mode change"},
                                        std::tuple{flags_at + 3, 0x01, "reserved"}}) {
    Bytes bad = alone;
    bad[at] = std::byte(value);
    const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { decode_one(bad, "bad wave"); });
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
  logfmt::RecordHeader h;
  h.type = logfmt::RecordType::Wave;
  h.lsn_count = 1;
  h.first_lsn = 6;
  const Bytes body(8, std::byte{0x0a});
  const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { decode_record(h, body, "lone"); });
  EXPECT_NE(msg.find("outside a transaction"), std::string::npos) << msg;
}

// Since version 7 a wave names the pages it left stale for a missing Python function, in one
// canonical form: a list only when it names a page, ids ascending, none 0.
TEST_F(LogCodecTest, WaveOpsNameTheirSkippedPagesInOneForm) {
  const auto encode = [](const WaveOp& w) {
    TransactionBuilder tb;
    tb.add(Delta::at(3, 0, std::vector<std::byte>(4, std::byte{1})));
    tb.add(w);
    Bytes rec;
    tb.frame(rec, 5);
    return rec;
  };
  const auto decode_one = [](const Bytes& rec) {
    const logfmt::RecordHeader h = test::header_at(rec, 0);
    return decode_record(h, std::span(rec).subspan(logfmt::kRecordHeaderBytes, h.body_bytes), "skips");
  };
  const std::vector<PageId> skipped{2, 7, 4096};
  const Bytes rec = encode(WaveOp{false, true, true, false, skipped});
  EXPECT_EQ(std::get<WaveOp>(decode_one(rec).ops.at(1)).skipped, skipped);
  // Without skipped pages a wave is the 8 bytes of version 6.
  EXPECT_EQ(encode(WaveOp{false, true, true, false, {}}).size() + 8 * (1 + skipped.size()), rec.size());
  // The list is the record's last bytes: count, then ids.
  const std::size_t list_at = rec.size() - 8 * (1 + skipped.size());
  const auto put_u64 = [](Bytes& b, std::size_t at, std::uint64_t v) { std::memcpy(b.data() + at, &v, 8); };
  const std::pair<std::function<void(Bytes&)>, const char*> cases[] = {
      {[&](Bytes& b) { put_u64(b, list_at + 16, 2); }, "ascending"},  // 2, 2: not strictly ascending
      {[&](Bytes& b) { put_u64(b, list_at + 8, 0); }, "ascending"},   // page id 0
      {[&](Bytes& b) { put_u64(b, list_at, 4); }, "exceeds the record"},
      {[&](Bytes& b) { put_u64(b, list_at, 0); }, "no list"},
  };
  for (const auto& [change, what] : cases) {
    Bytes bad = rec;
    change(bad);
    const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { decode_one(bad); });
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
}

TEST_F(LogCodecTest, CrcCoversEveryBitOfHeaderAndBody) {
  const SegmentScan scan = scan_segment(write_segment());
  Bytes bytes(scan.bytes.begin(), scan.bytes.end());
  for (const ScannedRecord& r : scan.records) {
    ScannedRecord out;
    std::string why;
    ASSERT_TRUE(check_record_at(bytes, r.offset, r.header.first_lsn, out, why)) << why;
    const std::uint64_t bits = (logfmt::kRecordHeaderBytes + r.header.body_bytes) * 8;
    for (std::uint64_t bit = 0; bit < bits; ++bit) {
      test::flip_bit(bytes, r.offset * 8 + bit);
      EXPECT_FALSE(check_record_at(bytes, r.offset, r.header.first_lsn, out, why))
          << "record at byte " << r.offset << " still checks out with bit " << bit << " flipped";
      test::flip_bit(bytes, r.offset * 8 + bit);
    }
  }
}

TEST_F(LogCodecTest, TruncatedBodiesAreCorrupt) {
  const SegmentScan scan = scan_segment(write_segment());
  for (const ScannedRecord& r : scan.records) {
    for (std::size_t len = 0; len < r.body.size(); ++len) {
      const std::string where = "record at " + std::to_string(r.offset) + " cut to " + std::to_string(len);
      const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] {
        decode_record(r.header, r.body.first(len), where);
      });
      // The message names the place the caller gave (file and offset in real use).
      EXPECT_NE(msg.find(where), std::string::npos) << msg;
    }
  }
}

TEST_F(LogCodecTest, LsnCountMustMatchTheOps) {
  const SegmentScan scan = scan_segment(write_segment());
  for (const ScannedRecord& r : scan.records) {
    logfmt::RecordHeader h = r.header;
    h.lsn_count += 1;
    const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { decode_record(h, r.body, "x"); });
    EXPECT_NE(msg.find("lsns"), std::string::npos) << msg;
  }
}

// Hostile input: random bodies under every type byte, and valid bodies with random damage.
// Anything may decode, but a failure must be Error(LogCorrupt); the run is meant for ASan/UBSan.
TEST_F(LogCodecTest, GarbageNeverCrashesAndOnlyRaisesLogCorrupt) {
  const SegmentScan scan = scan_segment(write_segment());
  int decoded = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    logfmt::RecordHeader h;
    Bytes body;
    if (iter % 2 == 0) {
      h.type = static_cast<logfmt::RecordType>(test::uniform(rng_, 0, 7));
      h.lsn_count = static_cast<std::uint32_t>(test::uniform(rng_, 0, 3));
      body = test::random_bytes(rng_, test::uniform(rng_, 0, 160));
      // Small length fields reach deeper than uniformly random ones.
      for (std::size_t at = 0; at + 4 <= body.size(); at += 4) {
        if (test::uniform(rng_, 0, 3) == 0) body[at + 1] = body[at + 2] = body[at + 3] = std::byte{0};
      }
    } else {
      const ScannedRecord& r = scan.records[test::uniform(rng_, 0, scan.records.size() - 1)];
      h = r.header;
      body.assign(r.body.begin(), r.body.end());
      const std::uint64_t damage = test::uniform(rng_, 1, 4);
      for (std::uint64_t k = 0; k < damage && !body.empty(); ++k) {
        body[test::uniform(rng_, 0, body.size() - 1)] = static_cast<std::byte>(rng_());
      }
      if (test::uniform(rng_, 0, 3) == 0) body.resize(test::uniform(rng_, 0, body.size() + 16));
    }
    try {
      decode_record(h, body, "garbage");
      ++decoded;
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), ErrorCode::LogCorrupt) << e.what();
    } catch (const std::exception& e) {
      FAIL() << "decode threw a non-mmsb exception: " << e.what();
    }
  }
  RecordProperty("decoded", decoded);
}

TEST_F(LogCodecTest, SegmentHeaderIsChecked) {
  const Bytes good = logfmt::encode_segment_header({12345});
  ASSERT_EQ(good.size(), logfmt::kSegmentHeaderBytes);
  EXPECT_EQ(logfmt::decode_segment_header(good, "f").first_lsn, 12345u);
  for (std::uint64_t bit = 0; bit < good.size() * 8; ++bit) {
    Bytes bad = good;
    test::flip_bit(bad, bit);
    const std::string msg =
        test::expect_error(ErrorCode::LogCorrupt, [&] { logfmt::decode_segment_header(bad, "the-file"); });
    EXPECT_NE(msg.find("the-file"), std::string::npos) << msg;
  }
  test::expect_error(ErrorCode::LogCorrupt, [&] {
    logfmt::decode_segment_header(std::span(good).first(logfmt::kSegmentHeaderBytes - 1), "f");
  });
}

TEST_F(LogCodecTest, FileNamesSortByLsnAndParseBack) {
  for (std::uint64_t n : {0ull, 1ull, 99ull, 18446744073709551609ull}) {
    std::uint64_t back = 7;
    EXPECT_TRUE(logfmt::parse_segment_file_name(logfmt::segment_file_name(n), back));
    EXPECT_EQ(back, n);
    EXPECT_TRUE(logfmt::parse_checkpoint_file_name(logfmt::checkpoint_file_name(n), back));
    EXPECT_EQ(back, n);
  }
  EXPECT_LT(logfmt::segment_file_name(9), logfmt::segment_file_name(10));
  std::uint64_t n = 0;
  EXPECT_FALSE(logfmt::parse_segment_file_name("seg-0000000000000000001.log", n));   // 19 digits
  EXPECT_FALSE(logfmt::parse_segment_file_name("seg-0000000000000000000x.log", n));
  EXPECT_FALSE(logfmt::parse_segment_file_name("seg-99999999999999999999.log", n));  // > 2^64
  EXPECT_FALSE(logfmt::parse_checkpoint_file_name(logfmt::checkpoint_file_name(3) + ".tmp", n));
}

// Every name the writer can make must parse back, up to the largest lsn.
TEST_F(LogCodecTest, FileNamesOfTheLargestLsnsParseBack) {
  for (std::uint64_t n = 18446744073709551610ull; n != 0; ++n) {  // ..._615 = 2^64 - 1, then wraps
    std::uint64_t back = 0;
    EXPECT_TRUE(logfmt::parse_segment_file_name(logfmt::segment_file_name(n), back)) << n;
    EXPECT_EQ(back, n);
  }
}

}  // namespace
}  // namespace mmsb
