// Bus semantics on the success paths: lsn and epoch accounting per kind of change, explicit vs
// diffed writes, lookups, pins, counters and build info.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "mmsb/core/Clock.hpp"
#include "mmsb/core/CpuFeatures.hpp"
#include "mmsb/engine/BuildInfo.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::bytes_of;

PageSpec spec_of(std::uint64_t size, std::string name = {}) {
  PageSpec s;
  s.size = size;
  s.name = std::move(name);
  return s;
}

Bytes contents(Bus& bus, PageId id) {
  Bytes out(bus.page(id).size);
  bus.snapshot(id, out);
  return out;
}

TEST(BusTest, EmptyBus) {
  Bus bus;
  EXPECT_EQ(bus.lsn(), 0u);
  EXPECT_EQ(bus.page_count(), 0u);
  EXPECT_TRUE(bus.page_ids().empty());
  EXPECT_FALSE(bus.closed());
  EXPECT_EQ(bus.threads(), ThreadPool::hardware_threads());
  EXPECT_EQ(Bus(BusOptions{3}).threads(), 3u);
}

TEST(BusTest, LsnCountsEveryKindOfChange) {
  Bus bus(BusOptions{2});
  const PageId a = bus.create_page(spec_of(32)).id;
  EXPECT_EQ(bus.lsn(), 1u);
  const PageId b = bus.create_page(spec_of(8), bytes_of("initial!")).id;
  EXPECT_EQ(bus.lsn(), 3u) << "creation plus the initial-data delta";
  bus.write(a, 0, bytes_of("x"));
  EXPECT_EQ(bus.lsn(), 4u);
  Delta d = Delta::at(a, 4, bytes_of("yz"));
  bus.apply(d);
  EXPECT_EQ(bus.lsn(), 5u);
  EXPECT_TRUE(bus.update(b, bytes_of("initia??")));
  EXPECT_EQ(bus.lsn(), 6u);
  EXPECT_FALSE(bus.update(b, bytes_of("initia??")));
  EXPECT_EQ(bus.lsn(), 6u) << "an unchanged update commits nothing";
  DeltaBatch batch;
  for (int i = 0; i < 5; ++i) batch.add(i % 2 == 0 ? a : b, 1, bytes_of("q"));
  EXPECT_EQ(bus.apply_batch(batch.view()), 11u) << "returns the lsn of the last row";
  EXPECT_EQ(bus.lsn(), 11u);
  EXPECT_EQ(bus.apply_batch(DeltaBatch{}.view()), 11u) << "an empty batch takes no lsn";
  bus.set_metadata(a, "k", MetaValue{"v", false});
  EXPECT_EQ(bus.lsn(), 12u);
  bus.set_metadata(a, "k", std::nullopt);
  EXPECT_EQ(bus.lsn(), 13u);
  bus.set_metadata(a, "k", std::nullopt);
  EXPECT_EQ(bus.lsn(), 13u) << "removing a missing key is a no-op";
  bus.delete_page(b);
  EXPECT_EQ(bus.lsn(), 14u);
}

TEST(BusTest, CreateWithInitialDataIsDeltaOne) {
  Bus bus;
  const Bytes data = bytes_of("0123456789abcdef");
  const PageRecord& r = bus.create_page(spec_of(16), data);
  EXPECT_EQ(r.epoch.load(), 1u);
  EXPECT_EQ(r.last_lsn.load(), bus.lsn());
  EXPECT_EQ(contents(bus, r.id), data);
  const PageRecord& empty = bus.create_page(spec_of(16));
  EXPECT_EQ(empty.epoch.load(), 0u);
  EXPECT_EQ(empty.last_lsn.load(), bus.lsn()) << "creation is the page's last record";
  EXPECT_EQ(contents(bus, empty.id), Bytes(16));
}

TEST(BusTest, ApplyAssignsLsnEpochAndTimestamp) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(64)).id;
  const std::uint64_t before = wall_clock_ns();
  Delta d = Delta::at(id, 10, bytes_of("abc"));
  bus.apply(d);
  EXPECT_EQ(d.lsn, bus.lsn());
  EXPECT_EQ(d.epoch, 1u);
  EXPECT_GE(d.timestamp_ns, before);
  EXPECT_LE(d.timestamp_ns, wall_clock_ns());
  EXPECT_EQ(bus.page(id).last_lsn.load(), d.lsn);
  EXPECT_EQ(bus.write(id, 0, bytes_of("z")), 2u) << "write returns the new epoch";
}

// BusOptions::clock stamps every commit (history shows its values, in commit order; a wave's
// deltas share one stamp of their own), and a clock that throws fails the commit it was called
// for, leaving state, lsn and history as they were.
TEST(BusTest, TheClockOptionStampsCommitsAndAFailingClockChangesNothing) {
  std::uint64_t now = 5'000;
  int allowed = -1;  // calls left before the clock throws (-1: never)
  BusOptions o;
  o.clock = [&] {
    if (allowed == 0) throw std::runtime_error("clock refused");
    if (allowed > 0) --allowed;
    return now += 10;
  };
  Bus bus(std::move(o));
  const PageId a = bus.create_page(spec_of(8), bytes_of("abcdefgh")).id;  // 5010
  const PageId b = bus.create_page(spec_of(8)).id;
  bus.depend(b, std::vector<PageId>{a}, {RecomputeKind::Copy, SemiringKind::SumProduct, "copy"}, {});  // wave 5020
  bus.write(a, 0, bytes_of("A"));                                                                     // 5030, wave 5040
  DeltaBatch batch;
  batch.add(a, 1, bytes_of("B"));
  bus.apply_batch(batch.view());  // 5050, wave 5060
  const std::vector<HistoryEntry> ha = bus.history(a), hb = bus.history(b);
  ASSERT_EQ(ha.size(), 3u);
  EXPECT_EQ(ha[0].timestamp_ns, 5010u);
  EXPECT_EQ(ha[1].timestamp_ns, 5030u);
  EXPECT_EQ(ha[2].timestamp_ns, 5050u);
  ASSERT_EQ(hb.size(), 3u);
  EXPECT_EQ(hb[0].timestamp_ns, 5020u);
  EXPECT_EQ(hb[1].timestamp_ns, 5040u);
  EXPECT_EQ(hb[2].timestamp_ns, 5060u);

  const test::BusState before = test::capture(bus);
  const Lsn lsn = bus.lsn();
  const std::uint64_t pages = bus.page_count();
  for (int calls : {0, 1}) {  // the commit's own stamp, then its wave's
    allowed = calls;
    EXPECT_THROW(bus.write(a, 0, bytes_of("C")), std::runtime_error) << calls;
    allowed = calls;
    EXPECT_THROW(bus.apply_batch(batch.view()), std::runtime_error) << calls;
  }
  allowed = 0;
  EXPECT_THROW(bus.create_page(spec_of(8), bytes_of("12345678")), std::runtime_error);
  EXPECT_TRUE(test::same_state(before, test::capture(bus)));
  EXPECT_EQ(bus.lsn(), lsn);
  EXPECT_EQ(bus.page_count(), pages);
  EXPECT_EQ(bus.history(a).size(), 3u);
  EXPECT_EQ(bus.history(b).size(), 3u);
  allowed = -1;
  bus.write(a, 0, bytes_of("D"));
  EXPECT_EQ(bus.history(a).back().lsn, lsn + 1) << "the next commit follows on";
}

// The clock runs inside a commit, under the commit lock: a clock that calls into the bus gets a
// clear error there (instead of waiting for the lock its own commit holds), and the commit fails
// without a trace.
TEST(BusTest, AClockThatCallsIntoTheBusFailsItsCommitInsteadOfDeadlocking) {
  Bus* self = nullptr;
  bool reenter = false;
  BusOptions o;
  o.clock = [&] { return reenter ? self->page_count() : std::uint64_t{7}; };
  Bus bus(std::move(o));
  self = &bus;
  const PageId a = bus.create_page(spec_of(8), bytes_of("abcdefgh")).id;
  const test::BusState before = test::capture(bus);
  reenter = true;
  const std::string msg = test::expect_error(ErrorCode::InvalidArgument, [&] { bus.write(a, 0, bytes_of("x")); });
  EXPECT_NE(msg.find("clock called into the bus"), std::string::npos) << msg;
  EXPECT_TRUE(test::same_state(before, test::capture(bus)));
  reenter = false;
  EXPECT_EQ(bus.write(a, 0, bytes_of("y")), 2u) << "the bus works on";
}

TEST(BusTest, ExplicitWritesBumpEpochEvenWhenBytesEqual) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(8), bytes_of("abcdefgh")).id;
  EXPECT_EQ(bus.write(id, 0, bytes_of("abcd")), 2u);
  Delta same = Delta::at(id, 4, bytes_of("efgh"));
  bus.apply(same);
  EXPECT_EQ(same.epoch, 3u);
  DeltaBatch batch;
  batch.add(id, 0, bytes_of("ab"));
  bus.apply_batch(batch.view());
  EXPECT_EQ(bus.page(id).epoch.load(), 4u);
  EXPECT_EQ(contents(bus, id), bytes_of("abcdefgh"));
}

TEST(BusTest, UpdateCommitsOnlyWhenContentChanges) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(100)).id;
  Bytes content(100);
  EXPECT_FALSE(bus.update(id, content));
  EXPECT_EQ(bus.page(id).epoch.load(), 0u);
  const BusStats before = bus.stats();
  content[3] = std::byte{1};
  content[90] = std::byte{2};
  EXPECT_TRUE(bus.update(id, content));
  EXPECT_EQ(bus.page(id).epoch.load(), 1u);
  EXPECT_EQ(contents(bus, id), content);
  // Only the diff is committed: two single-byte runs, not the 100-byte page.
  EXPECT_EQ(bus.stats().bytes_applied - before.bytes_applied, 2u);
  EXPECT_EQ(bus.stats().deltas_applied - before.deltas_applied, 1u);
  EXPECT_FALSE(bus.update(id, content));
  EXPECT_EQ(bus.page(id).epoch.load(), 1u);
  EXPECT_TRUE(bus.update(id, Bytes(100), Epoch{1}));
  EXPECT_EQ(bus.page(id).epoch.load(), 2u);
}

TEST(BusTest, MatchingExpectEpochCommits) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(4)).id;
  EXPECT_EQ(bus.write(id, 0, bytes_of("a"), Epoch{0}), 1u);
  Delta d = Delta::at(id, 1, bytes_of("b"));
  d.expect_epoch = 1;
  bus.apply(d);
  EXPECT_EQ(d.epoch, 2u);
}

TEST(BusTest, BatchRowsAreDeltasInRowOrder) {
  Bus bus(BusOptions{3});
  const PageId a = bus.create_page(spec_of(4)).id;
  const PageId b = bus.create_page(spec_of(4)).id;
  DeltaBatch batch;
  batch.add(a, 0, bytes_of("1111"));
  batch.add(b, 0, bytes_of("22"));
  batch.add(a, 1, bytes_of("33"));
  batch.add(a, 3, {});
  const Lsn last = bus.apply_batch(batch.view());
  EXPECT_EQ(last, 6u);
  EXPECT_EQ(contents(bus, a), bytes_of("1331"));
  EXPECT_EQ(bus.page(a).epoch.load(), 3u);
  EXPECT_EQ(bus.page(a).last_lsn.load(), 6u);
  EXPECT_EQ(bus.page(b).epoch.load(), 1u);
  EXPECT_EQ(bus.page(b).last_lsn.load(), 4u);
}

TEST(BusTest, LookupsAndInfo) {
  Bus bus;
  PageSpec typed = spec_of(24, "grid");
  typed.dtype = DType::Float32;
  typed.shape = {2, 3};
  typed.metadata["unit"] = MetaValue{"m", false};
  const PageId g = bus.create_page(typed).id;
  const PageId anon = bus.create_page(spec_of(8)).id;
  const PageId gone = bus.create_page(spec_of(8, "gone")).id;
  bus.delete_page(gone);
  EXPECT_EQ(bus.page_ids(), (std::vector<PageId>{g, anon}));
  EXPECT_EQ(bus.page_count(), 2u);
  EXPECT_EQ(bus.find_page("grid"), g);
  EXPECT_EQ(bus.find_page("gone"), 0u);
  EXPECT_EQ(bus.find_page("nope"), 0u);
  const PageInfo info = bus.page_info(g);
  EXPECT_EQ(info.name, "grid");
  EXPECT_EQ(info.shape, (std::vector<std::uint64_t>{2, 3}));
  EXPECT_EQ(info.metadata.at("unit").value, "m");
  EXPECT_EQ(info.location, "cpu");
  EXPECT_EQ(bus.page(g).dtype, DType::Float32);
  EXPECT_TRUE(bus.page_info(anon).name.empty());
  // Names are unique among live pages only.
  const PageId again = bus.create_page(spec_of(8, "gone")).id;
  EXPECT_GT(again, gone);
  EXPECT_EQ(bus.find_page("gone"), again);
}

TEST(BusTest, MetadataSetReplaceRemove) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(8)).id;
  bus.set_metadata(id, "k", MetaValue{"v1", false});
  bus.set_metadata(id, "k", MetaValue{std::string("\0\1", 2), true});
  Metadata m = bus.page_info(id).metadata;
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m.at("k"), (MetaValue{std::string("\0\1", 2), true}));
  bus.set_metadata(id, "k", std::nullopt);
  EXPECT_TRUE(bus.page_info(id).metadata.empty());
  EXPECT_EQ(bus.lsn(), 4u);
}

TEST(BusTest, ReadAndSnapshotCopy) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(10), bytes_of("0123456789")).id;
  Bytes part(3);
  bus.read(id, 7, part);
  EXPECT_EQ(part, bytes_of("789"));
  Bytes all(10);
  EXPECT_EQ(bus.snapshot(id, all), 1u);
  EXPECT_EQ(all, bytes_of("0123456789"));
  Bytes none;
  bus.read(id, 10, none);  // an empty read at the end is in range
}

TEST(BusTest, PinnedPageMemoryOutlivesDeletion) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(5000), Bytes(5000, std::byte{7})).id;
  PageRecord& pinned = bus.pin(id);
  const std::uint64_t data_before = bus.memory().data_bytes;
  bus.delete_page(id);
  test::expect_error(ErrorCode::PageNotFound, [&] { bus.page(id); });
  EXPECT_EQ(bus.memory().pages, 0u);
  EXPECT_EQ(bus.memory().data_bytes, data_before) << "pinned data must not be freed yet";
  EXPECT_TRUE(std::all_of(pinned.data, pinned.data + 5000, [](std::byte b) { return b == std::byte{7}; }));
  bus.unpin(pinned);
  EXPECT_EQ(bus.memory().data_bytes, 0u);
}

// A page deleted inside a transaction stays pinned until the transaction is retired (rollback
// could bring it back); retiring finds its undo entry among many others (a wave's, a batch's,
// those a failed step rolled back) and frees the bytes.
TEST(BusTest, PagesDeletedInATransactionAreFreedWhenItCommits) {
  Bus bus;
  const PageSpec f64{64, DType::Float64, {8}};
  const PageId source = bus.create_page(f64).id;
  std::vector<PageId> chain{source};
  for (int i = 0; i < 20; ++i) {
    chain.push_back(bus.create_page(f64).id);
    bus.depend(chain.back(), std::vector<PageId>{chain[chain.size() - 2]}, {RecomputeKind::Copy}, {});
  }
  const PageId refuses = bus.create_page(f64).id;
  bool fail_now = false;
  bus.depend(refuses, std::vector<PageId>{chain.back()}, {RecomputeKind::Callable, SemiringKind::SumProduct, "t.f"}, {},
             [&](std::span<std::byte>, std::span<const PageRecord* const>, std::span<const std::byte* const>) {
               if (fail_now) throw std::runtime_error("refused");
             });
  std::vector<PageId> gone;
  for (int i = 0; i < 3; ++i) gone.push_back(bus.create_page(spec_of(5000), Bytes(5000, std::byte{7})).id);
  const std::uint64_t before = bus.memory().data_bytes;

  bus.begin_transaction();
  const double one = 1;
  bus.write(source, 0, {reinterpret_cast<const std::byte*>(&one), 8});  // a wave: many undo entries
  bus.delete_page(gone[0]);
  DeltaBatch batch;
  batch.add(source, 8, bytes_of("abcdefgh"));
  bus.apply_batch(batch.view());
  fail_now = true;
  const double two = 2;
  test::expect_error(ErrorCode::Propagation, [&] { bus.write(source, 0, {reinterpret_cast<const std::byte*>(&two), 8}); });
  fail_now = false;
  bus.delete_page(gone[1]);
  bus.delete_page(gone[2]);
  EXPECT_EQ(bus.memory().data_bytes, before) << "deleted inside an open transaction: still pinned";
  bus.commit_transaction();
  EXPECT_EQ(bus.memory().data_bytes, before - 3 * 5000);
}

// The undo entries that own memory (deletions, metadata, batches, graph changes) live apart from
// the undo log: a failed step drops exactly its own, so those recorded before it still undo
// correctly when the whole transaction rolls back, and those recorded after it find theirs.
TEST(BusTest, RollbackAfterAFailedStepRestoresWhatTheTransactionDeletedAndChanged) {
  Bus bus;
  const PageSpec f64{64, DType::Float64, {8}};
  const PageId source = bus.create_page(f64).id;
  const PageId refuses = bus.create_page(f64).id;
  bool fail_now = false;
  bus.depend(refuses, std::vector<PageId>{source}, {RecomputeKind::Callable, SemiringKind::SumProduct, "t.f"}, {},
             [&](std::span<std::byte>, std::span<const PageRecord* const>, std::span<const std::byte* const>) {
               if (fail_now) throw std::runtime_error("refused");
             });
  const PageId first = bus.create_page(spec_of(100), Bytes(100, std::byte{1})).id;
  const PageId second = bus.create_page(spec_of(100), Bytes(100, std::byte{2})).id;
  const PageId other = bus.create_page(spec_of(8)).id;
  bus.set_metadata(other, "k", MetaValue{"before", false});
  const Lsn lsn_before = bus.lsn();
  Bytes source_before(64);
  bus.snapshot(source, source_before);

  bus.begin_transaction();
  bus.delete_page(first);
  bus.set_metadata(other, "k", MetaValue{"inside", false});
  fail_now = true;
  DeltaBatch batch;  // recorded, then dropped with its step when the wave refuses
  batch.add(source, 0, bytes_of("abcdefgh"));
  test::expect_error(ErrorCode::Propagation, [&] { bus.apply_batch(batch.view()); });
  fail_now = false;
  bus.add_edge(other, second, EdgeKind::Control);
  bus.delete_page(second);
  bus.rollback_transaction();

  EXPECT_EQ(bus.lsn(), lsn_before);
  Bytes got(100);
  bus.snapshot(first, got);
  EXPECT_EQ(got, Bytes(100, std::byte{1}));
  bus.snapshot(second, got);
  EXPECT_EQ(got, Bytes(100, std::byte{2}));
  EXPECT_EQ(bus.page_info(other).metadata.at("k"), (MetaValue{"before", false}));
  EXPECT_TRUE(bus.in_edges(second).empty()) << "the control edge was undone";
  Bytes source_now(64);
  bus.snapshot(source, source_now);
  EXPECT_EQ(source_now, source_before);
  // Nothing left pinned or half-restored: deleting them now frees their bytes.
  const std::uint64_t data = bus.memory().data_bytes;
  bus.delete_page(first);
  bus.delete_page(second);
  EXPECT_EQ(bus.memory().data_bytes, data - 200);
}

TEST(BusTest, StatsCountCommittedWork) {
  Bus bus;
  const PageId id = bus.create_page(spec_of(16), Bytes(16, std::byte{1})).id;
  bus.write(id, 0, bytes_of("abc"));
  DeltaBatch batch;
  batch.add(id, 0, bytes_of("de"));
  batch.add(id, 4, bytes_of("f"));
  bus.apply_batch(batch.view());
  bus.delete_page(id);
  BusStats s = bus.stats();
  EXPECT_EQ(s.pages_created, 1u);
  EXPECT_EQ(s.pages_deleted, 1u);
  EXPECT_EQ(s.deltas_applied, 4u);
  EXPECT_EQ(s.bytes_applied, 16u + 3u + 3u);
  EXPECT_EQ(s.commits, 3u) << "initial data, write, batch";
  bus.reset_stats();
  s = bus.stats();
  EXPECT_EQ(s.deltas_applied + s.bytes_applied + s.commits + s.pages_created + s.pages_deleted, 0u);
}

TEST(BusTest, MemoryReportCountsLiveData) {
  Bus bus;
  for (int i = 0; i < 10; ++i) bus.create_page(spec_of(1000));
  const MemoryReport m = bus.memory();
  EXPECT_EQ(m.pages, 10u);
  EXPECT_EQ(m.data_bytes, 10'000u);
  EXPECT_EQ(m.record_bytes_per_page, 64u);
  EXPECT_GT(m.metadata_bytes, 0u);
  EXPECT_EQ(m.queue_bytes, 0u);  // no ring until the first submit()
  EXPECT_EQ(m.total_bytes(), m.data_bytes + m.arena_slack_bytes + m.metadata_bytes + m.graph_bytes + m.index_bytes +
                                 m.cache_bytes + m.log_bytes + m.queue_bytes);
}

TEST(BusTest, BuildInfoDescribesThisBuild) {
  const BuildInfo b = build_info();
  EXPECT_FALSE(b.version.empty());
  EXPECT_EQ(b.simd, simd_level_name(simd_level()));
  EXPECT_EQ(b.page_record_bytes, 64u);
  EXPECT_EQ(b.parallel_backend, ThreadPool::backend());
  EXPECT_EQ(b.tbb, std::string(ThreadPool::backend()) == "tbb");
  EXPECT_EQ(b.hardware_threads, ThreadPool::hardware_threads());
  if (!b.cuda) {
    EXPECT_EQ(b.cuda_devices, 0);
  }
}

}  // namespace
}  // namespace mmsb
