// Recovery through the Bus: what a directory bus acknowledged is what a reopen restores (bytes,
// epochs, last lsns, names, metadata, layouts, lsn, ids), in every durability mode; a cut tail
// restores exactly some prefix of the acknowledged commits and the bus keeps working after it;
// one writer per directory; must_exist refuses non-buses; a damaged newest checkpoint falls back.
#include <gtest/gtest.h>

#include <optional>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/core/Crc32c.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/graph/Recompute.hpp"
#include "mmsb/log/Checkpoint.hpp"
#include "mmsb/log/Log.hpp"
#include "mmsb/log/RecordCodec.hpp"
#include "mmsb/log/SegmentReader.hpp"
#include "mmsb/page/PageTable.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::bytes_of;
using test::DurableState;

// Opens `path` with must_exist and checks it holds `want`.
void expect_reopens_to(const std::string& path, Durability d, const DurableState& want) {
  Bus bus(test::dir_options(path, d, /*must_exist=*/true));
  EXPECT_TRUE(test::same_durable(want, test::durable_state(bus)));
  EXPECT_FALSE(bus.recovery().truncated_tail) << bus.recovery().tail_reason;
}

class RecoveryModeTest : public ::testing::TestWithParam<Durability> {
 protected:
  Durability mode() const { return GetParam(); }
  // fdatasync per commit is slow on some disks; fewer steps keep the suite fast there.
  int steps() const { return mode() == Durability::Fsync ? 160 : 400; }

  test::TempDir dir_;
};

std::string mode_name(const ::testing::TestParamInfo<Durability>& info) {
  return std::string(durability_name(info.param));
}

TEST_P(RecoveryModeTest, RandomOpsSurviveReopen) {
  const std::string path = dir_ / "bus";
  PageId max_id = 0;
  DurableState want;
  {
    Bus bus(test::dir_options(path, mode()));
    test::RandomWorkload work(bus, 1234, "a");
    work.run(bus, steps());
    want = work.latest();
    max_id = work.max_id();
    bus.close();
  }
  expect_reopens_to(path, mode(), want);
  // A reopened bus appends after what it recovered; a second reopen sees both rounds.
  {
    Bus bus(test::dir_options(path, mode(), /*must_exist=*/true));
    PageSpec spec;
    spec.size = 8;
    EXPECT_EQ(bus.create_page(spec).id, max_id + 1) << "a page id was reused after reopen";
    test::RandomWorkload work(bus, 99, "b");
    work.run(bus, steps() / 3);
    want = work.latest();
    bus.close();
  }
  expect_reopens_to(path, mode(), want);
}

TEST_P(RecoveryModeTest, CutLastSegmentRestoresAPrefixOfCommits) {
  const std::string pristine = dir_ / "pristine";
  const std::string work_dir = dir_ / "work";
  Bus bus(test::dir_options(pristine, mode()));
  test::RandomWorkload work(bus, 777, "a", 0.05);
  work.run(bus, steps() / 4);
  bus.checkpoint();
  work.set_checkpoint_rate(0);  // one long last segment to cut
  work.run(bus, steps() / 2);
  const Lsn final_lsn = bus.lsn();
  bus.close();

  const std::string last = test::segment_files(pristine).back();
  const std::string last_name = test::fs::path(last).filename().string();
  const std::uint64_t size = test::fs::file_size(last);
  std::vector<std::uint64_t> cuts = {0, 1, logfmt::kSegmentHeaderBytes - 1, logfmt::kSegmentHeaderBytes,
                                     logfmt::kSegmentHeaderBytes + 1, size - 1, size};
  test::Rng rng(5);
  const int trials = mode() == Durability::Fsync ? 10 : 40;
  for (int i = 0; i < trials; ++i) cuts.push_back(test::uniform(rng, logfmt::kSegmentHeaderBytes, size));

  for (const std::uint64_t cut : cuts) {
    SCOPED_TRACE("segment " + last_name + " cut to " + std::to_string(cut) + " of " + std::to_string(size) + " bytes");
    test::copy_dir(pristine, work_dir);
    test::fs::resize_file(test::fs::path(work_dir) / last_name, cut);
    DurableState want;
    {
      Bus again(test::dir_options(work_dir, mode(), /*must_exist=*/true));
      const auto it = work.snapshots().find(again.lsn());
      ASSERT_NE(it, work.snapshots().end()) << "recovered lsn " << again.lsn() << " ends no acknowledged commit";
      EXPECT_TRUE(test::same_durable(it->second, test::durable_state(again)));
      if (cut == size) {
        EXPECT_EQ(again.lsn(), final_lsn);
      }
      // Commits after recovering a cut log must survive the next reopen too.
      test::RandomWorkload more(again, cut, "c", 0);
      more.run(again, 6);
      want = more.latest();
      again.close();
    }
    expect_reopens_to(work_dir, mode(), want);
  }
}

// A process killed without close(): flush and fsync keep every acknowledged commit; none keeps
// at least what the last checkpoint wrote, and at most the commits after it, whole.
TEST_P(RecoveryModeTest, KilledProcessKeepsWhatItsModePromises) {
  const std::string killed = dir_ / "killed";
  const test::ChildResult child = test::run_in_child([&]() -> std::string {
    Bus bus(test::dir_options(killed, mode()));
    test::RandomWorkload work(bus, 31337, "k", 0.02);
    work.run(bus, steps());
    ::kill(::getpid(), SIGKILL);
    return "still alive";
  });
  ASSERT_TRUE(WIFSIGNALED(child.status) && WTERMSIG(child.status) == SIGKILL) << child.report;
  // The same seeded workload, closed normally, says what the child had acknowledged.
  Bus reference(test::dir_options(dir_ / "reference", mode()));
  test::RandomWorkload work(reference, 31337, "k", 0.02);
  work.run(reference, steps());
  reference.close();

  Bus bus(test::dir_options(killed, mode(), /*must_exist=*/true));
  const Lsn got = bus.lsn();
  if (mode() == Durability::None) {
    EXPECT_GE(got, work.last_checkpoint());
    ASSERT_EQ(work.snapshots().count(got), 1u) << "recovered lsn " << got << " is inside a commit";
  } else {
    EXPECT_EQ(got, work.latest().bus.lsn);
  }
  EXPECT_TRUE(test::same_durable(work.snapshots().at(got), test::durable_state(bus)));
}

INSTANTIATE_TEST_SUITE_P(Durability, RecoveryModeTest,
                         ::testing::Values(Durability::None, Durability::Flush, Durability::Fsync), mode_name);

class RecoveryTest : public ::testing::Test {
 protected:
  test::TempDir dir_;
  std::string path_ = dir_ / "bus";
};

// The user-visible form of SegmentScanTest.AppendAfterReopenOfSegmentCutInsidePadding.
TEST_F(RecoveryTest, CommitsAfterRecoveringACutInsidePaddingSurvive) {
  PageId id = 0;
  {
    Bus bus(test::dir_options(path_, Durability::Flush));
    PageSpec spec;
    spec.size = 64;
    id = bus.create_page(spec).id;
    bus.write(id, 0, bytes_of("abcde"));  // a 77-byte record padded to 80
    bus.close();
  }
  const std::string seg = test::segment_files(path_).back();
  const std::uint64_t size = test::fs::file_size(seg);
  test::fs::resize_file(seg, size - 2);  // inside the 3 padding bytes: the record is whole
  DurableState want;
  {
    Bus bus(test::dir_options(path_, Durability::Flush, true));
    EXPECT_EQ(bus.lsn(), 2u);
    bus.write(id, 8, bytes_of("after"));
    want = test::durable_state(bus);
    bus.close();
  }
  Bus bus(test::dir_options(path_, Durability::Flush, true));
  EXPECT_TRUE(test::same_durable(want, test::durable_state(bus))) << "the write after the reopen was lost";
}

TEST_F(RecoveryTest, SecondWriterIsRefusedUntilClose) {
  Bus first(test::dir_options(path_, Durability::Flush));
  PageSpec spec;
  spec.size = 16;
  const PageId id = first.create_page(spec).id;
  for (const bool must_exist : {false, true}) {
    const std::string msg = test::expect_error(ErrorCode::BusLocked, [&] {
      Bus second(test::dir_options(path_, Durability::Flush, must_exist));
    });
    EXPECT_NE(msg.find(path_), std::string::npos) << msg;
  }
  // The refused open changed nothing for the holder.
  first.write(id, 0, bytes_of("still mine"));
  const DurableState want = test::durable_state(first);
  first.close();
  expect_reopens_to(path_, Durability::Flush, want);
  // Destroying a bus without close() releases the lock too.
  { Bus scoped(test::dir_options(path_, Durability::Flush, true)); }
  Bus after(test::dir_options(path_, Durability::Fsync, true));
  EXPECT_TRUE(test::same_durable(want, test::durable_state(after)));
}

TEST_F(RecoveryTest, MustExistRefusesMissingOrEmptyDirectories) {
  const std::string missing = dir_ / "missing";
  std::string msg = test::expect_error(ErrorCode::InvalidArgument, [&] {
    Bus bus(test::dir_options(missing, Durability::Flush, true));
  });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_FALSE(test::fs::exists(missing)) << "must_exist created the directory";

  const std::string empty = dir_ / "empty";
  test::fs::create_directory(empty);
  test::write_file(empty + "/notes.txt", bytes_of("not a bus"));
  msg = test::expect_error(ErrorCode::InvalidArgument, [&] {
    Bus bus(test::dir_options(empty, Durability::Flush, true));
  });
  EXPECT_NE(msg.find(empty), std::string::npos) << msg;
  // Refusing did not leave the directory locked, and a bus that never committed reopens.
  {
    Bus created(test::dir_options(empty, Durability::Flush));
    EXPECT_EQ(created.lsn(), 0u);
  }
  Bus reopened(test::dir_options(empty, Durability::Flush, true));
  EXPECT_EQ(reopened.lsn(), 0u);
  EXPECT_EQ(reopened.page_count(), 0u);
}

// Segments rotate at Log::kSegmentBytes; recovery reads across them, and damage to a segment
// that is not the last is corruption even when it looks like a torn tail.
TEST_F(RecoveryTest, RecoveryAcrossRotatedSegments) {
  constexpr std::uint64_t kPage = std::uint64_t{1} << 20;
  const std::string pristine = dir_ / "pristine";
  DurableState want;
  {
    Bus bus(test::dir_options(pristine, Durability::Flush));
    const PageId id = test::write_records(bus, kPage, Log::kSegmentBytes / kPage + 2, 3);
    bus.write(id, 5, bytes_of("tail"));
    want = test::durable_state(bus);
    bus.close();
  }
  const std::vector<std::string> segments = test::segment_files(pristine);
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_LE(test::fs::file_size(segments[0]), Log::kSegmentBytes + kPage + 4096);
  expect_reopens_to(pristine, Durability::Flush, want);

  const std::string work = dir_ / "work";
  const std::string first = test::fs::path(segments[0]).filename().string();
  test::copy_dir(pristine, work);
  test::fs::resize_file(test::fs::path(work) / first, test::fs::file_size(segments[0]) - 100);
  std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] {
    Bus bus(test::dir_options(work, Durability::Flush, true));
  });
  EXPECT_NE(msg.find(first), std::string::npos) << msg;
}

// A crash while a size rotation created the next segment leaves it with a short header (the
// file is created, then its header written): nothing was committed there, and the log before it
// is whole. The bus opens to the same state, removes the stub and writes on; a stub whose name
// does not follow the log is a missing segment.
TEST_F(RecoveryTest, ASegmentWithAShortHeaderAfterARotationHoldsNothing) {
  const std::string pristine = dir_ / "pristine";
  DurableState want;
  Lsn last = 0;
  {
    Bus bus(test::dir_options(pristine, Durability::Flush));
    PageSpec spec;
    spec.size = 64;
    const PageId id = bus.create_page(spec).id;
    bus.write(id, 3, bytes_of("abc"));
    want = test::durable_state(bus);
    last = bus.lsn();
  }
  const std::string work = dir_ / "work";
  for (const std::uint64_t bytes : {std::uint64_t{0}, std::uint64_t{1}, logfmt::kSegmentHeaderBytes - 1}) {
    SCOPED_TRACE(std::to_string(bytes) + " header bytes");
    test::copy_dir(pristine, work);
    const Bytes full = logfmt::encode_segment_header({last + 1});
    test::write_file(work + "/" + logfmt::segment_file_name(last + 1), std::span(full).first(bytes));
    DurableState more;
    {
      Bus bus(test::dir_options(work, Durability::Flush, true));
      EXPECT_TRUE(test::same_durable(want, test::durable_state(bus)));
      bus.write(bus.page_ids().front(), 0, bytes_of("z"));
      more = test::durable_state(bus);
    }
    expect_reopens_to(work, Durability::Flush, more);
  }
  test::copy_dir(pristine, work);
  test::write_file(work + "/" + logfmt::segment_file_name(last + 5), Bytes(4));
  const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] {
    Bus bus(test::dir_options(work, Durability::Flush, true));
  });
  EXPECT_NE(msg.find("a segment is missing"), std::string::npos) << msg;
}

// A directory whose newest segment an older writer started (format 4, which knows no Location
// record): the bus reads it, leaves it as it was, and writes on in a new segment of the current
// format, which a reopen reads after it.
TEST_F(RecoveryTest, AnOlderFormatSegmentIsReadAndContinuedInANewSegment) {
  const std::string path = dir_ / "bus";
  PageSpec spec;
  spec.size = 64;
  PageId id = 0;
  {
    Bus bus(test::dir_options(path, Durability::Flush));
    id = bus.create_page(spec).id;
    bus.write(id, 0, bytes_of("old"));
    bus.close();
  }
  std::vector<std::string> segments = test::segment_files(path);
  ASSERT_EQ(segments.size(), 1u);
  Bytes image = test::read_file(segments[0]);
  logfmt::SegmentHeader h = logfmt::decode_segment_header(image, "seg");
  h.version = 4;
  const Bytes header = logfmt::encode_segment_header(h);
  std::copy(header.begin(), header.end(), image.begin());
  test::write_file(segments[0], image);
  DurableState want;
  {
    Bus bus(test::dir_options(path, Durability::Flush, true));
    bus.write(id, 8, bytes_of("new"));
    want = test::durable_state(bus);
    bus.close();
  }
  segments = test::segment_files(path);
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_EQ(test::read_file(segments[0]), image);
  EXPECT_EQ(logfmt::decode_segment_header(test::read_file(segments[1]), "new").version, logfmt::kFormatVersion);
  expect_reopens_to(path, Durability::Flush, want);
}

// durability=none rotates segments at the same bound while the bus runs, whether its records are
// gathered in its buffer (small) or written at once (large): the buffered bytes go to the segment
// the index placed them in before the next one starts, and a reopen reads across both.
TEST_F(RecoveryTest, DurabilityNoneRotatesSegmentsWhileRunning) {
  for (const std::uint64_t record : {std::uint64_t{8} << 10, std::uint64_t{1} << 20}) {
    SCOPED_TRACE(testing::Message() << record << "-byte records");
    const std::string path = dir_ / ("none-" + std::to_string(record));
    DurableState want;
    {
      Bus bus(test::dir_options(path, Durability::None));
      const PageId id = test::write_records(bus, record, Log::kSegmentBytes / record + 2, 5);
      // Rotated while running, not at close: the first segment was written out whole.
      const std::vector<std::string> segments = test::segment_files(path);
      ASSERT_EQ(segments.size(), 2u);
      EXPECT_GE(test::fs::file_size(segments[0]), Log::kSegmentBytes);
      EXPECT_LE(test::fs::file_size(segments[0]), Log::kSegmentBytes + record + 4096);
      bus.write(id, 3, bytes_of("tail"));
      want = test::durable_state(bus);
      bus.close();
    }
    expect_reopens_to(path, Durability::None, want);
  }
}

// durability=none writes large records at once and gathers small ones: interleaved, they still
// reach the file in lsn order (what is gathered goes first), and a reopen restores them all.
TEST_F(RecoveryTest, DurabilityNoneKeepsLsnOrderAcrossGatheredAndDirectRecords) {
  const std::string path = dir_ / "none-mixed";
  DurableState want;
  {
    Bus bus(test::dir_options(path, Durability::None));
    PageSpec spec;
    spec.size = std::uint64_t{256} << 10;
    const PageId id = bus.create_page(spec).id;
    test::Rng rng(6);
    for (int i = 0; i < 40; ++i) {
      const std::size_t len = i % 3 == 2 ? spec.size : 1 + rng() % 4000;  // some direct, most gathered
      bus.write(id, rng() % (spec.size - len + 1), test::random_bytes(rng, len));
    }
    want = test::durable_state(bus);
    bus.close();
  }
  expect_reopens_to(path, Durability::None, want);
}

// A checksummed batch record with a row on a missing page, or past its page's end (a buggy or
// hostile writer): the open fails with LogCorrupt naming the record and the row, whether replay
// applies the batch on one thread or in lanes (replay checks rows while applying them).
TEST_F(RecoveryTest, BatchRecordWithABadRowIsCorruptAtAnyThreadCount) {
  constexpr std::size_t kRows = 20'000;  // enough rows for two lanes
  constexpr std::size_t kBad = 17'000;
  for (const bool missing_page : {true, false}) {
    for (const unsigned threads : {1u, 2u}) {
      const std::string path = dir_ / ("bad-row-" + std::to_string(missing_page) + "-" + std::to_string(threads));
      Lsn next = 0;
      {
        Bus bus(test::dir_options(path, Durability::Flush));
        PageSpec spec;
        spec.size = 4096;
        bus.create_page(spec);
        bus.create_page(spec);
        next = bus.lsn() + 1;
      }
      std::vector<PageId> ids(kRows);
      std::vector<std::uint64_t> offsets(kRows), lengths(kRows, 64);
      for (std::size_t i = 0; i < kRows; ++i) {
        ids[i] = 1 + i % 2;
        offsets[i] = (i % 64) * 64;
      }
      const Bytes payload(kRows * 64, std::byte{7});
      if (missing_page) {
        ids[kBad] = 99;
      } else {
        offsets[kBad] = 4096 - 32;
      }
      {
        Log log(path, Durability::Flush, Log::Access::Open);
        log.start_writing();
        Bytes record;
        encode_op_record(record, next, DeltaBatchView{ids, offsets, lengths, payload}, 1);
        log.append(record, next + kRows - 1);
      }
      BusOptions options = test::dir_options(path, Durability::Flush, true);
      options.threads = threads;
      const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { Bus bus(options); });
      EXPECT_NE(msg.find("batch row " + std::to_string(kBad)), std::string::npos) << msg;
      EXPECT_NE(msg.find(missing_page ? "99" : "[4064, 4128) of page 1, which has 4096 bytes"), std::string::npos) << msg;
    }
  }
}

// An fsync writer keeps zeros ahead of its small commits, so that an fdatasync need not journal
// a new file size each time: after a crash they end the segment, and recovery takes them for its
// end, not for a torn tail; writing resumes right after the last record; close() cuts them.
TEST_F(RecoveryTest, ZerosWrittenAheadByAnFsyncWriterEndTheSegmentCleanly) {
  const std::string path = dir_ / "ahead";
  constexpr int kCommits = 20;
  const test::ChildResult child = test::run_in_child([&]() -> std::string {
    auto* bus = new Bus(test::dir_options(path, Durability::Fsync));  // never closed: a crash
    PageSpec spec;
    spec.size = 64;
    const PageId id = bus->create_page(spec).id;
    for (int i = 0; i < kCommits; ++i) bus->write(id, 0, bytes_of("commit " + std::to_string(i) + "."));
    const std::string seg = test::segment_files(path).back();
    const SegmentScan scan = scan_segment(seg);
    if (scan.torn) return "torn: " + scan.torn_reason;
    if (test::fs::file_size(seg) < scan.valid_end + Log::kPreallocBytes / 2) return "no zeros ahead of the records";
    return "";
  });
  ASSERT_TRUE(WIFEXITED(child.status) && WEXITSTATUS(child.status) == 0) << "child status " << child.status;
  ASSERT_EQ(child.report, "");
  Bytes got(64);
  {
    Bus bus(test::dir_options(path, Durability::Fsync, /*must_exist=*/true));
    EXPECT_FALSE(bus.recovery().truncated_tail) << bus.recovery().tail_reason;
    EXPECT_EQ(bus.lsn(), Lsn{kCommits + 1});
    bus.read(1, 0, got);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), 10), "commit 19.");
    bus.write(1, 0, bytes_of("after the crash"));
    bus.close();
  }
  const std::string seg = test::segment_files(path).back();
  const SegmentScan scan = scan_segment(seg);
  EXPECT_FALSE(scan.torn) << scan.torn_reason;
  EXPECT_EQ(test::fs::file_size(seg), scan.valid_end) << "close() left zeros after the last record";
  Bus again(test::dir_options(path, Durability::Fsync, /*must_exist=*/true));
  EXPECT_EQ(again.lsn(), Lsn{kCommits + 2});
  again.read(1, 0, got);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), 15), "after the crash");
}

TEST_F(RecoveryTest, DeletedIdsAreNeverReusedAfterReopen) {
  for (const bool checkpoint : {false, true}) {
    SCOPED_TRACE(checkpoint ? "deleted before a checkpoint" : "deleted in the log");
    const std::string path = dir_ / (checkpoint ? "with" : "without");
    {
      Bus bus(test::dir_options(path, Durability::Flush));
      PageSpec spec;
      spec.size = 8;
      for (int i = 0; i < 4; ++i) bus.create_page(spec);
      bus.delete_page(4);  // the newest: only the log or the checkpoint remembers it existed
      bus.delete_page(2);
      if (checkpoint) bus.checkpoint();
      bus.close();
    }
    Bus bus(test::dir_options(path, Durability::Flush, true));
    EXPECT_EQ(bus.page_ids(), (std::vector<PageId>{1, 3}));
    PageSpec spec;
    spec.size = 8;
    EXPECT_EQ(bus.create_page(spec).id, 5u);
  }
}

// Appends one record per op (each taking one lsn) to the log of the bus directory `path`, from
// lsn `first`: a crafted log, checksummed like a real one.
template <class... Ops>
void append_ops(const std::string& path, Lsn first, const Ops&... ops) {
  Log log(path, Durability::Flush, Log::Access::Open);
  log.start_writing();
  Lsn lsn = first;
  Bytes record;
  auto append = [&](const auto& op) {
    record.clear();
    encode_op_record(record, lsn, op);
    log.append(record, lsn);
    ++lsn;
  };
  (append(ops), ...);
}

// Checksummed records that create a page far past the ids used (a gap a real writer leaves only
// by rolling back as many creations; here a crafted log): recovery takes ids up to the table's
// last without allocating records for the gap, a derivation on the far page included, verify()
// stays quick and clean, and a checkpoint and reopen keep it; an id past the last is corruption.
TEST_F(RecoveryTest, CreationsFarAheadOfTheUsedIdsRecoverWithoutAllocatingTheGap) {
  for (const PageId far : {PageTable::kMaxPageId - 1, PageTable::kMaxPageId + 1}) {
    SCOPED_TRACE("far id " + std::to_string(far));
    const std::string path = dir_ / ("far-" + std::to_string(far));
    PageSpec spec;
    spec.size = 8;
    Lsn next = 0;
    {
      Bus bus(test::dir_options(path, Durability::Flush));
      bus.create_page(spec);
      next = bus.lsn() + 1;
    }
    RecomputeSpec copy;
    copy.kind = RecomputeKind::Copy;
    append_ops(path, next, PageCreateOp{far, spec}, PageCreateOp{far + 1, spec}, DependOp{far + 1, copy, {far}, {}});
    const BusOptions options = test::dir_options(path, Durability::Flush, true);
    Lsn covered = 0;
    if (far > PageTable::kMaxPageId) {
      const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { Bus bus(options); });
      EXPECT_NE(msg.find(std::to_string(PageTable::kMaxPageId)), std::string::npos) << msg;
      continue;
    }
    {
      Bus bus(options);
      EXPECT_EQ(bus.page_ids(), (std::vector<PageId>{1, far, far + 1}));
      EXPECT_LT(bus.memory().total_bytes(), std::uint64_t{64} << 20);
      const IntegrityReport report = bus.verify();
      EXPECT_TRUE(report.ok) << report.problems.front();
      const Bytes value = bytes_of("farpage!");
      bus.write(far, 0, value);
      Bytes got(8);
      bus.read(far + 1, 0, got);
      EXPECT_EQ(got, value);  // the derivation on the far page propagates
      covered = bus.checkpoint();
      test::expect_error(ErrorCode::InvalidArgument, [&] { bus.create_page(spec); });
      bus.close();
    }
    Bus again(options);
    EXPECT_EQ(again.page_ids(), (std::vector<PageId>{1, far, far + 1}));
    EXPECT_EQ(again.recovery().checkpoint_lsn, covered);
  }
}

// A bus directory holding pages 1 and 2 of 8 bytes and page 3 of 64; returns the next lsn.
Lsn two_small_pages_and_a_large_one(const std::string& path) {
  Bus bus(test::dir_options(path, Durability::Flush));
  PageSpec small;
  small.size = 8;
  PageSpec large;
  large.size = 64;
  bus.create_page(small);
  bus.create_page(small);
  bus.create_page(large);
  return bus.lsn() + 1;
}

// Graph records that bus.depend or add_edge would have refused (a crafted log): a built-in
// recompute reads its parents as laid out like its child, so replay refuses them as corruption,
// naming the record, instead of leaving a wave to read past a page.
TEST_F(RecoveryTest, GraphRecordsTheLiveCallsWouldRefuseAreCorrupt) {
  RecomputeSpec copy;
  copy.kind = RecomputeKind::Copy;
  const struct {
    const char* name;
    std::variant<DependOp, EdgeOp> op;
    const char* says;
  } cases[] = {
      {"copy from a smaller parent", DependOp{3, copy, {1}, {}}, "laid out like page 3"},
      {"copy of two parents", DependOp{2, copy, {1, 1}, {}}, "exactly one parent"},
      {"reduce over a raw page", DependOp{2, RecomputeSpec{RecomputeKind::Reduce, SemiringKind::MinPlus, {}}, {1}, {}},
       "min_plus"},
      {"device_sync between sizes", EdgeOp{1, 3, EdgeKind::DeviceSync, true}, "copy of its parent"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir_ / c.name;
    const Lsn next = two_small_pages_and_a_large_one(path);
    std::visit([&](const auto& op) { append_ops(path, next, op); }, c.op);
    const std::string msg =
        test::expect_error(ErrorCode::LogCorrupt, [&] { Bus bus(test::dir_options(path, Durability::Flush, true)); });
    EXPECT_NE(msg.find("lsn " + std::to_string(next)), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.says), std::string::npos) << msg;
  }
}

// Checksummed records no writer makes, which replay would otherwise take as they say: a place no
// commit could name, a data edge without its recompute, an edge removal of another kind, a
// propagated delta whose inputs are not its parents at epochs they reached (provenance would
// then contradict the log), and a record taking no lsn that does not decode. Each is corruption
// naming its record, for mmsb.open and for a read-only view of the history alike.
TEST_F(RecoveryTest, CraftedRecordsReplayWouldMisreadAreCorrupt) {
  RecomputeSpec copy;
  copy.kind = RecomputeKind::Copy;
  PageSpec tpu;
  tpu.size = 8;
  tpu.location = "tpu";
  auto propagated = [](std::vector<std::pair<PageId, Epoch>> inputs) {
    Delta d = Delta::at(2, 0, bytes_of("derived!"));
    d.source = Source::Propagation;
    return DerivedOp{d, std::move(inputs)};
  };
  const struct {
    const char* name;
    std::vector<LogOp> ops;  // one record each, the last one the bad one
    const char* says;
  } cases[] = {
      {"a page on an unknown device", {PageCreateOp{4, tpu}}, "unknown page location"},
      {"a data edge by an edge record", {EdgeOp{1, 2, EdgeKind::Data, true}}, "adds a data edge"},
      {"an edge removed as another kind",
       {EdgeOp{1, 2, EdgeKind::Control, true}, EdgeOp{1, 2, EdgeKind::DeviceSync, false}},
       "control edge, not device_sync"},
      {"inputs at an epoch not reached", {DependOp{2, copy, {1}, {}}, propagated({{1, 999}})}, "epoch 999 of page 1"},
      {"an input that is not a parent", {DependOp{2, copy, {1}, {}}, propagated({{3, 0}})}, "not its parent"},
      {"a propagated delta to a source page", {propagated({})}, "has no recompute"},
      {"a record of no lsn that does not decode", {WaveOp{false, false, true, false}}, "not a wave"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir_ / c.name;
    Lsn next = two_small_pages_and_a_large_one(path);
    {
      Log log(path, Durability::Flush, Log::Access::Open);
      log.start_writing();
      Bytes record;
      for (const LogOp& op : c.ops) {
        record.clear();
        if (std::holds_alternative<WaveOp>(op)) {
          encode_transaction_record(record, next, std::span(&op, 1));
          log.append(record, next - 1);
          continue;
        }
        std::visit([&](const auto& o) {
          if constexpr (std::is_same_v<std::decay_t<decltype(o)>, DeltaOp>) {
            encode_op_record(record, next, o.delta);
          } else if constexpr (!std::is_same_v<std::decay_t<decltype(o)>, BatchOp> &&
                               !std::is_same_v<std::decay_t<decltype(o)>, WaveOp>) {
            encode_op_record(record, next, o);
          }
        }, op);
        log.append(record, next);
        ++next;
      }
    }
    for (const bool history_view : {false, true}) {
      BusOptions options = test::dir_options(path, Durability::Flush, true);
      options.read_only = history_view;
      const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { Bus bus(options); });
      EXPECT_NE(msg.find(c.says), std::string::npos) << msg;
      EXPECT_NE(msg.find("byte"), std::string::npos) << msg;
    }
  }
}

// A Wave op names the pages its wave left stale for a missing Python function (since version 7),
// and replay leaves them stale with their memos unchanged. It may name only pages the wave could
// have skipped: a callable's page that the wave reaches and did not recompute, in a segment of a
// version that has such lists. Anything else is corruption naming the wave's lsn.
TEST_F(RecoveryTest, AWaveNamesOnlyPagesItCouldHaveSkipped) {
  const RecomputeSpec callable{RecomputeKind::Callable, SemiringKind::SumProduct, "f"};
  const RecomputeSpec copy{RecomputeKind::Copy, SemiringKind::SumProduct, ""};
  Delta recomputed = Delta::at(2, 0, bytes_of("derived!"));
  recomputed.source = Source::Propagation;
  const struct {
    const char* name;
    RecomputeSpec fn;         // of page 2, from page 1
    PageId written;           // by the wave's commit
    std::vector<LogOp> more;  // between that write and the Wave op
    std::uint32_t version;
    const char* says;  // nullptr: replays, page 2 left stale with its memo
  } cases[] = {
      {"a skipped callable", callable, 1, {}, logfmt::kFormatVersion, nullptr},
      {"a page of no recompute", callable, 3, {}, logfmt::kFormatVersion, "page 3 as skipped"},
      {"a built-in recompute", copy, 1, {}, logfmt::kFormatVersion, "does not recompute with one"},
      {"a page it recomputed", callable, 1, {DerivedOp{recomputed, {{1, 1}}}}, logfmt::kFormatVersion,
       "which it recomputed"},
      {"a page it does not reach", callable, 2, {}, logfmt::kFormatVersion, "does not reach"},
      {"a version 6 segment", callable, 1, {}, 6, "format version cannot"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir_ / c.name;
    const Lsn next = two_small_pages_and_a_large_one(path);
    append_ops(path, next, DependOp{2, c.fn, {1}, {}});
    {
      std::vector<LogOp> ops{DeltaOp{Delta::at(c.written, 0, bytes_of("written!"))}};
      ops.insert(ops.end(), c.more.begin(), c.more.end());
      ops.push_back(WaveOp{false, true, false, false, {c.written == 3 ? PageId{3} : PageId{2}}});
      Log log(path, Durability::Flush, Log::Access::Open);
      log.start_writing();
      Bytes record;
      encode_transaction_record(record, next + 1, ops);
      log.append(record, next + ops.size() - 1);
    }
    if (c.version != logfmt::kFormatVersion) {
      for (const std::string& file : test::segment_files(path)) {
        Bytes bytes = test::read_file(file);
        std::memcpy(bytes.data() + 8, &c.version, 4);
        const std::uint32_t crc = crc32c(bytes.data(), logfmt::kSegmentHeaderBytes - 4);
        std::memcpy(bytes.data() + logfmt::kSegmentHeaderBytes - 4, &crc, 4);
        test::write_file(file, bytes);
      }
    }
    for (const bool history_view : {false, true}) {
      BusOptions options = test::dir_options(path, Durability::Flush, true);
      options.read_only = history_view;
      if (c.says == nullptr) {
        Bus bus(options);
        EXPECT_EQ(bus.stale_pages(), std::vector<PageId>{2});
        // Never computed (the Depend, one record alone, was committed in deferred mode): a wave
        // taken as a recompute with a cutoff would have left page 1's epoch, 1.
        EXPECT_EQ(bus.derivation(2).value().memo, std::vector<Epoch>{});
        continue;
      }
      const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { Bus bus(options); });
      EXPECT_NE(msg.find(c.says), std::string::npos) << msg;
      EXPECT_NE(msg.find("wave at lsn"), std::string::npos) << msg;
    }
  }
}

// Two checkpoints A < B with log between and after them; the newest damaged in several ways.
class CheckpointFallbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Bus bus(test::dir_options(pristine_, Durability::Flush));
    test::RandomWorkload work(bus, 4242, "a", 0);
    work.run(bus, 60);
    a_ = bus.checkpoint();
    work.run(bus, 60);
    b_ = bus.checkpoint();
    work.run(bus, 60);
    want_ = work.latest();
    bus.close();
    ASSERT_LT(a_, b_);
    ASSERT_EQ(test::checkpoint_files(pristine_).size(), 2u);
    test::copy_dir(pristine_, work_);
  }

  std::string checkpoint(Lsn lsn) const { return work_ + "/" + logfmt::checkpoint_file_name(lsn); }
  std::string segment(Lsn first) const { return work_ + "/" + logfmt::segment_file_name(first); }
  void damage(const std::string& file) {
    Bytes bytes = test::read_file(file);
    test::flip_bit(bytes, bytes.size() * 4 + 3);  // a bit in the middle
    test::write_file(file, bytes);
  }
  // Reopens the work copy: its state must be the final one, recovered from `checkpoint_lsn`.
  void expect_recovers_from(Lsn checkpoint_lsn) {
    Bus bus(test::dir_options(work_, Durability::Flush, true));
    EXPECT_EQ(bus.recovery().checkpoint_lsn, checkpoint_lsn);
    EXPECT_TRUE(test::same_durable(want_, test::durable_state(bus)));
  }

  test::TempDir dir_;
  std::string pristine_ = dir_ / "pristine";
  std::string work_ = dir_ / "work";
  Lsn a_ = 0;
  Lsn b_ = 0;
  DurableState want_;
};

TEST_F(CheckpointFallbackTest, IntactNewestIsUsedAndCoveredSegmentsAreNotNeeded) {
  expect_recovers_from(b_);
  // The checkpoint's lsn is honoured: the segments it covers may be gone.
  test::fs::remove(segment(1));
  test::fs::remove(segment(a_ + 1));
  expect_recovers_from(b_);
}

TEST_F(CheckpointFallbackTest, DamagedNewestFallsBackToThePrevious) {
  damage(checkpoint(b_));
  // A leftover temporary from a crashed checkpoint is never read.
  test::write_file(checkpoint(b_ + 1000) + ".tmp", bytes_of("half a checkpoint"));
  expect_recovers_from(a_);
}

// Checkpoints are chosen by the lsn their names give: the newest renamed to an older lsn is
// damage (it would serve its own state for that lsn), and recovery falls back past it.
TEST_F(CheckpointFallbackTest, ACheckpointNamedForAnotherLsnIsDamage) {
  const Lsn renamed = a_ + (b_ - a_) / 2;
  ASSERT_GT(renamed, a_);
  test::fs::rename(checkpoint(b_), checkpoint(renamed));
  const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { read_checkpoint(checkpoint(renamed)); });
  EXPECT_NE(msg.find("holds the state at lsn " + std::to_string(b_) + " but its name says lsn " +
                     std::to_string(renamed)),
            std::string::npos)
      << msg;
  expect_recovers_from(a_);
  Bus bus(test::dir_options(work_, Durability::Flush, true));
  EXPECT_EQ(bus.at(renamed)->lsn(), renamed) << "time travel used the misnamed checkpoint";
}

TEST_F(CheckpointFallbackTest, TruncatedNewestFallsBackToThePrevious) {
  test::fs::resize_file(checkpoint(b_), test::fs::file_size(checkpoint(b_)) / 2);
  expect_recovers_from(a_);
}

TEST_F(CheckpointFallbackTest, AllCheckpointsDamagedFallsBackToTheLogAlone) {
  damage(checkpoint(a_));
  damage(checkpoint(b_));
  expect_recovers_from(0);
}

// A checkpoint whose checksums are right but whose content is impossible (crafted, or written by
// a buggy build) must be treated as corrupt: LogCorrupt naming the file, or a fallback to an
// older checkpoint and the log. Here page 1 is raw with an odd size; its dtype byte is set to
// float64, and every checksum is recomputed.
// Recomputes the checksums of the checkpoint page entry at `entry` and of the whole file, so a
// crafted change reaches the checks past them.
void reseal_checkpoint(Bytes& bytes, std::size_t entry) {
  auto put_u32 = [&](std::size_t at, std::uint32_t v) { std::memcpy(bytes.data() + at, &v, 4); };
  std::uint64_t entry_len = 0;
  std::memcpy(&entry_len, bytes.data() + entry, 8);
  put_u32(entry + 8, crc32c(bytes.data() + entry + 16, entry_len));
  put_u32(bytes.size() - 8, crc32c(bytes.data(), bytes.size() - 8));
}

TEST_F(CheckpointFallbackTest, CheckpointWithValidChecksumsButAnImpossiblePageIsCorrupt) {
  const std::string path = dir_ / "odd";
  {
    Bus bus(test::dir_options(path, Durability::Flush));
    PageSpec spec;
    spec.size = 13;
    bus.create_page(spec);
    bus.checkpoint();
    bus.close();
  }
  const std::string ckpt = test::checkpoint_files(path).at(0);
  Bytes bytes = test::read_file(ckpt);
  // Header (48) | entry: u64 length, u32 crc, u32 0 | epoch, last_lsn | framed PageCreate record:
  // 24-byte header, then u64 id, u64 size, u8 dtype.
  const std::size_t entry = logfmt::kCheckpointHeaderBytes;
  const std::size_t record = entry + 16 + 16;
  const std::size_t dtype_at = record + logfmt::kRecordHeaderBytes + 16;
  ASSERT_EQ(bytes[dtype_at], std::byte{0});
  bytes[dtype_at] = static_cast<std::byte>(DType::Float64);
  auto put_u32 = [&](std::size_t at, std::uint32_t v) { std::memcpy(bytes.data() + at, &v, 4); };
  std::uint32_t record_body = 0;
  std::memcpy(&record_body, bytes.data() + record, 4);
  put_u32(record + 4, logfmt::record_crc(std::span(bytes).subspan(record, logfmt::kRecordHeaderBytes + record_body)));
  reseal_checkpoint(bytes, entry);
  test::write_file(ckpt, bytes);
  try {
    read_checkpoint(ckpt);  // may reject the page (a fine fix), but not for a checksum
  } catch (const Error& e) {
    ASSERT_EQ(std::string(e.what()).find("checksum"), std::string::npos) << "crafting failed: " << e.what();
  }

  try {
    Bus bus(test::dir_options(path, Durability::Flush, true));
    EXPECT_EQ(bus.recovery().checkpoint_lsn, 0u) << "an impossible checkpoint was used";
    EXPECT_EQ(bus.page(1).dtype, DType::Raw);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::LogCorrupt) << e.what();
    EXPECT_NE(std::string(e.what()).find(ckpt), std::string::npos) << e.what();
  }
}

// A page entry whose last change is after the checkpoint's lsn, or whose epoch counts more
// changes than lsns came before it (found by fuzz_log mode 6: recovery used such a checkpoint
// and verify() then flagged the page): corrupt, with checksums that pass.
TEST_F(CheckpointFallbackTest, CheckpointPagesChangedPastItsLsnAreCorrupt) {
  const std::string path = dir_ / "past";
  Lsn covered = 0;
  {
    Bus bus(test::dir_options(path, Durability::Flush));
    PageSpec spec;
    spec.size = 8;
    bus.create_page(spec);
    bus.write(1, 0, bytes_of("12345678"));
    covered = bus.checkpoint();
    bus.close();
  }
  const std::string ckpt = test::checkpoint_files(path).at(0);
  const Bytes pristine = test::read_file(ckpt);
  // Header (48) | entry: u64 length, u32 crc, u32 0 | u64 epoch, u64 last_lsn | ...
  const std::size_t entry = logfmt::kCheckpointHeaderBytes;
  std::uint64_t epoch = 0;
  std::uint64_t last = 0;
  std::memcpy(&epoch, pristine.data() + entry + 16, 8);
  std::memcpy(&last, pristine.data() + entry + 24, 8);
  ASSERT_EQ(epoch, 1u);
  ASSERT_EQ(last, covered);
  const struct {
    std::size_t at;
    std::uint64_t value;
    const char* says;
  } cases[] = {{entry + 24, covered + 1, "after the checkpoint's lsn"},
               {entry + 24, std::uint64_t{1} << 59, "after the checkpoint's lsn"},
               {entry + 16, covered + 1, "epoch above its last lsn"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.says);
    Bytes bytes = pristine;
    std::memcpy(bytes.data() + c.at, &c.value, 8);
    reseal_checkpoint(bytes, entry);
    test::write_file(ckpt, bytes);
    const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { read_checkpoint(ckpt); });
    EXPECT_NE(msg.find(c.says), std::string::npos) << msg;
  }
}

// The reader checks the file crc once and the entries' crcs only to name a damaged entry, so
// every byte must still be covered: a flipped bit anywhere, in page bytes, framing, graph or
// trailer, is LogCorrupt and never a checkpoint with wrong content.
// A checkpoint crafted to claim an lsn near 2^64 would make the bus's lsn wrap: commits
// acknowledged, then a log no open accepts. Lsns stop at 2^62: a checkpoint past it is damage
// (named: the older log cannot reach the lsn it claims), and at it the bus opens but refuses the
// next commit, changing nothing.
TEST_F(CheckpointFallbackTest, ACheckpointPastTheLargestLsnIsDamageAndAtItCommitsAreRefused) {
  for (const Lsn claimed : {logfmt::kMaxLsn + 1, logfmt::kMaxLsn}) {
    SCOPED_TRACE("claimed lsn " + std::to_string(claimed));
    const std::string path = dir_ / ("lsn-" + std::to_string(claimed));
    test::copy_dir(pristine_, path);
    const std::string from = path + "/" + logfmt::checkpoint_file_name(b_);
    Bytes bytes = test::read_file(from);
    std::memcpy(bytes.data() + 16, &claimed, 8);
    const std::uint32_t header_crc = crc32c(bytes.data(), logfmt::kCheckpointHeaderBytes - 4);
    std::memcpy(bytes.data() + logfmt::kCheckpointHeaderBytes - 4, &header_crc, 4);
    const std::uint32_t file_crc = crc32c(bytes.data(), bytes.size() - 8);
    std::memcpy(bytes.data() + bytes.size() - 8, &file_crc, 4);
    std::filesystem::remove(from);
    test::write_file(path + "/" + logfmt::checkpoint_file_name(claimed), bytes);
    const BusOptions options = test::dir_options(path, Durability::Flush, true);
    if (claimed > logfmt::kMaxLsn) {
      const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { Bus bus(options); });
      EXPECT_NE(msg.find("past the largest, 2^62"), std::string::npos) << msg;
      continue;
    }
    std::optional<DurableState> before;
    // Opened, refused, checkpointed (each open and checkpoint starts a segment at the lsn after
    // the largest, holding nothing), and opened again, twice: the log stays openable.
    for (int open = 0; open < 3; ++open) {
      Bus bus(options);
      ASSERT_EQ(bus.lsn(), logfmt::kMaxLsn);
      if (!before) before = test::durable_state(bus);
      EXPECT_TRUE(test::same_durable(*before, test::durable_state(bus)));
      const PageId page = bus.page_ids().front();
      const std::string msg = test::expect_error(ErrorCode::Durability, [&] { bus.write(page, 0, bytes_of("x")); });
      EXPECT_NE(msg.find("2^62"), std::string::npos) << msg;
      EXPECT_EQ(bus.lsn(), logfmt::kMaxLsn);
      EXPECT_TRUE(test::same_durable(*before, test::durable_state(bus)));
      if (open == 1) bus.checkpoint();
    }
  }
}

TEST(CheckpointDamageTest, EveryFlippedByteIsCaught) {
  test::TempDir dir;
  {
    Bus bus(test::dir_options(dir.path(), Durability::Flush));
    PageSpec spec;
    spec.size = 40;
    const PageId a = bus.create_page(spec, Bytes(40, std::byte{1})).id;
    spec.name = "b";
    const PageId b = bus.create_page(spec).id;
    bus.depend(b, std::vector<PageId>{a}, {RecomputeKind::Copy}, {});
    bus.checkpoint();
    bus.close();
  }
  const Bytes pristine = test::read_file(test::checkpoint_files(dir.path()).at(0));
  ASSERT_NO_THROW(decode_checkpoint(FileBytes::borrow(pristine), "pristine"));
  std::size_t named_entries = 0;
  std::vector<std::size_t> missed;
  for (std::size_t i = 0; i < pristine.size(); ++i) {
    Bytes bytes = pristine;
    test::flip_bit(bytes, i * 8 + i % 8);
    try {
      decode_checkpoint(FileBytes::borrow(bytes), "damaged");
      missed.push_back(i);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::LogCorrupt) << "byte " << i << ": " << e.what();
      if (std::string(e.what()).find("page entry checksum") != std::string::npos) ++named_entries;
    }
  }
  EXPECT_TRUE(missed.empty()) << missed.size() << " damaged bytes not caught, the first at " << missed.front()
                              << " of " << pristine.size();
  EXPECT_GT(named_entries, 40u) << "a damaged page's bytes should be named by their entry";
}

TEST_F(CheckpointFallbackTest, FallbackWithoutTheLogItNeedsIsCorruption) {
  damage(checkpoint(b_));
  test::fs::remove(segment(a_ + 1));  // lsns a+1..b now exist only in the damaged checkpoint
  test::expect_error(ErrorCode::LogCorrupt, [&] { Bus bus(test::dir_options(work_, Durability::Flush, true)); });
}

}  // namespace
}  // namespace mmsb
