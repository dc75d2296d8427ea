// Bus::history by index lookup: the provenance index names a page's lsns and the log's record
// index the records holding them. The oracle is the old full scan, kept here only: every record
// of every segment decoded in lsn order. A random workload (creates, writes, multi-run deltas,
// batches, transactions and rollbacks, propagation waves, deletes, ticks, checkpoints, reopens)
// runs on three buses fed the same calls: a directory bus that is reopened (exactly its scan), one
// that never is (exactly its scan), and an in-memory bus (equal to the latter but for timestamps).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#include "TestUtil.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/log/Log.hpp"
#include "mmsb/log/LogFormat.hpp"
#include "mmsb/log/RecordCodec.hpp"

namespace mmsb {
namespace {

using test::Bytes;
using test::Rng;
using test::uniform;

using Histories = std::map<PageId, std::vector<HistoryEntry>>;

// The old history(): every delta of the directory's log, page by page, from lsn 1.
Histories scan_histories(const std::string& dir) {
  Histories out;
  auto note = [&](PageId page, Lsn lsn, Source source, std::uint64_t ts, std::vector<Run> runs) {
    auto& v = out[page];
    v.push_back({lsn, v.size() + 1, source, ts, std::move(runs)});
  };
  test::for_each_logged_op(dir, [&](Lsn lsn, const LogOp& op) {
    if (const auto* d = std::get_if<DeltaOp>(&op)) {
      note(d->delta.page_id(), lsn, d->delta.source, d->delta.timestamp_ns, d->delta.run_list());
    } else if (const auto* dv = std::get_if<DerivedOp>(&op)) {
      note(dv->delta.page_id(), lsn, dv->delta.source, dv->delta.timestamp_ns, dv->delta.run_list());
    } else if (const auto* b = std::get_if<BatchOp>(&op)) {
      for (std::size_t i = 0; i < b->page_ids.size(); ++i) {
        // A row is one run, none when empty (as an empty Delta has none).
        std::vector<Run> runs;
        if (b->lengths[i] != 0) runs.push_back(Run{b->offsets[i], b->lengths[i]});
        note(b->page_ids[i], lsn + i, Source::User, b->timestamp_ns, std::move(runs));
      }
    }
  });
  return out;
}

// Equal entries; timestamps only when `with_time` (two buses stamp the same call differently).
void expect_same(const std::vector<HistoryEntry>& got, const std::vector<HistoryEntry>& want, bool with_time,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].lsn, want[i].lsn) << what << " entry " << i;
    EXPECT_EQ(got[i].epoch, want[i].epoch) << what << " entry " << i;
    EXPECT_EQ(got[i].source, want[i].source) << what << " entry " << i;
    EXPECT_EQ(got[i].runs, want[i].runs) << what << " entry " << i;
    if (with_time) {
      EXPECT_EQ(got[i].timestamp_ns, want[i].timestamp_ns) << what << " entry " << i;
    }
  }
}

class BusHistoryTest : public ::testing::TestWithParam<Durability> {
 protected:
  static constexpr std::uint64_t kPage = 64;

  void SetUp() override {
    reopened_ = std::make_unique<Bus>(BusOptions{.path = dir_a_.path() + "/bus", .durability = GetParam()});
    kept_ = std::make_unique<Bus>(BusOptions{.path = dir_b_.path() + "/bus", .durability = GetParam()});
  }

  // The same call on every bus (ids and lsns agree while they are fed the same calls).
  template <class Fn>
  void each(Fn&& fn) {
    fn(*reopened_);
    fn(*kept_);
    fn(mem_);
  }

  void reopen() {
    reopened_.reset();
    reopened_ = std::make_unique<Bus>(
        BusOptions{.path = dir_a_.path() + "/bus", .durability = GetParam(), .must_exist = true});
  }

  // Every id ever used, deleted pages too: each bus's history against its oracle.
  void check(const std::string& when) {
    std::vector<std::vector<HistoryEntry>> a, b, m;
    for (PageId id = 1; id < next_id_; ++id) {
      a.push_back(reopened_->history(id));  // first: they flush what durability=none holds back
      b.push_back(kept_->history(id));
      m.push_back(mem_.history(id));
    }
    const Histories sa = scan_histories(dir_a_.path() + "/bus");
    const Histories sb = scan_histories(dir_b_.path() + "/bus");
    for (PageId id = 1; id < next_id_; ++id) {
      const std::string what = when + ", page " + std::to_string(id);
      auto want = [&](const Histories& s) { return s.count(id) ? s.at(id) : std::vector<HistoryEntry>{}; };
      expect_same(a[id - 1], want(sa), true, what + " (reopened bus)");
      expect_same(b[id - 1], want(sb), true, what + " (directory bus)");
      expect_same(m[id - 1], b[id - 1], false, what + " (in-memory bus)");
      if (const auto ids = mem_.page_ids(); std::binary_search(ids.begin(), ids.end(), id)) {
        EXPECT_EQ(m[id - 1].size(), mem_.page(id).epoch.load()) << what;
      }
    }
  }

  test::TempDir dir_a_, dir_b_;
  std::unique_ptr<Bus> reopened_, kept_;
  Bus mem_;
  PageId next_id_ = 1;
};

TEST_P(BusHistoryTest, IndexedHistoryEqualsTheFullScan) {
  Rng rng(static_cast<std::uint64_t>(GetParam()) + 17);
  std::vector<PageId> live;
  auto pick = [&] { return live[uniform(rng, 0, live.size() - 1)]; };
  auto create = [&](bool with_data) {
    const Bytes data = with_data ? test::random_bytes(rng, kPage) : Bytes{};
    PageId id = 0;
    each([&](Bus& b) { id = b.create_page(PageSpec{kPage}, data).id; });
    live.push_back(id);
    next_id_ = id + 1;
    return id;
  };
  for (int i = 0; i < 6; ++i) create(i % 2 == 0);
  int checks = 0;
  for (int step = 0; step < 700 / test::kSanitizerScale; ++step) {
    const auto what = uniform(rng, 0, 99);
    if (what < 4) {
      create(uniform(rng, 0, 1) == 1);
    } else if (what < 30) {  // one write; to a parent, with its wave
      const PageId id = pick();
      const std::uint64_t off = uniform(rng, 0, kPage - 1);
      const Bytes data = test::random_bytes(rng, uniform(rng, 0, kPage - off));
      each([&](Bus& b) { b.write(id, off, data); });
    } else if (what < 40) {  // several runs in one delta
      const PageId id = pick();
      const std::vector<std::uint64_t> offsets = {uniform(rng, 0, 20), uniform(rng, 30, 40)};
      const std::vector<std::uint64_t> lengths = {uniform(rng, 1, 8), uniform(rng, 1, 20)};
      const Bytes payload = test::random_bytes(rng, lengths[0] + lengths[1]);
      each([&](Bus& b) {
        Delta d = Delta::runs(id, offsets, lengths, payload);
        b.apply(d);
      });
    } else if (what < 55) {  // a batch, pages repeated
      DeltaBatch batch;
      for (int k = 0, rows = static_cast<int>(uniform(rng, 1, 300)); k < rows; ++k) {
        const std::uint64_t off = uniform(rng, 0, kPage - 8);
        batch.add(pick(), off, test::random_bytes(rng, uniform(rng, 0, 8)));
      }
      each([&](Bus& b) { b.apply_batch(batch.view()); });
    } else if (what < 65) {  // a transaction, sometimes rolled back (then making no page: a reopened
                             // bus would not know the id it used)
      const bool rollback = uniform(rng, 0, 3) == 0;
      const PageId a = pick(), c = pick();
      const Bytes x = test::random_bytes(rng, 8), y = test::random_bytes(rng, 4);
      DeltaBatch batch;
      for (int k = 0; k < 5; ++k) batch.add(pick(), 8 * static_cast<std::uint64_t>(k), test::random_bytes(rng, 8));
      each([&](Bus& b) {
        b.begin_transaction();
        b.write(a, 0, x);
        if (!rollback) b.create_page(PageSpec{kPage}, Bytes(kPage, std::byte{1}));
        b.apply_batch(batch.view());
        b.write(c, 60, y);
        if (rollback) {
          b.rollback_transaction();
        } else {
          b.commit_transaction();
        }
      });
      if (!rollback) live.push_back(next_id_++);
    } else if (what < 70 && live.size() > 4) {  // a derived copy of a page: waves from then on
      const PageId parent = pick();
      const PageId child = create(false);
      each([&](Bus& b) { b.depend(child, std::span<const PageId>(&parent, 1), {RecomputeKind::Copy}, {}); });
    } else if (what < 76) {  // queued deltas, one tick
      const int n = static_cast<int>(uniform(rng, 1, 20));
      std::vector<std::pair<PageId, Bytes>> q;
      for (int k = 0; k < n; ++k) q.push_back({pick(), test::random_bytes(rng, 4)});
      each([&](Bus& b) {
        for (const auto& [id, data] : q) b.submit(Delta::at(id, 16, data));
        b.tick();
      });
    } else if (what < 80 && live.size() > 6) {
      const std::size_t at = uniform(rng, 0, live.size() - 1);
      if (reopened_->out_edges(live[at]).empty()) {
        each([&](Bus& b) { b.delete_page(live[at]); });
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(at));
      }
    } else if (what < 85) {
      reopened_->checkpoint();
      if (uniform(rng, 0, 1) == 0) kept_->checkpoint();
    } else if (what < 88) {
      reopen();
    } else if (what < 92) {
      ASSERT_NO_FATAL_FAILURE(check("step " + std::to_string(step)));
      ++checks;
    }
  }
  ASSERT_NO_FATAL_FAILURE(check("the end"));
  reopen();
  ASSERT_NO_FATAL_FAILURE(check("reopened at the end"));
  EXPECT_GT(checks, 10 / test::kSanitizerScale);
  EXPECT_GT(mem_.stats().derived_deltas, 0u);
}

INSTANTIATE_TEST_SUITE_P(Durability, BusHistoryTest, ::testing::Values(Durability::None, Durability::Flush),
                         [](const ::testing::TestParamInfo<Durability>& p) {
                           return std::string(durability_name(p.param));
                         });

// After a reopen from a checkpoint the provenance index starts there: the first history() reads
// the older log once, and from then on, the pages' full history answers provenance too.
TEST(BusHistoryIndexTest, ReopenedFromACheckpointTheFirstCallIndexesTheOlderLog) {
  test::TempDir dir;
  const std::string path = dir.path() + "/bus";
  PageId a = 0, gone = 0;
  {
    Bus bus({.path = path});
    a = bus.create_page(PageSpec{8}).id;
    gone = bus.create_page(PageSpec{8}).id;
    for (std::uint64_t i = 0; i < 5; ++i) bus.write(a, i, test::filled(1, static_cast<std::uint8_t>(i)));
    bus.write(gone, 0, test::filled(8, 9));
    bus.delete_page(gone);
    bus.checkpoint();
    bus.write(a, 7, test::filled(1, 7));
  }
  Bus bus({.path = path, .must_exist = true});
  EXPECT_EQ(bus.recovery().checkpoint_lsn, 9u);
  EXPECT_EQ(bus.provenance(a, 1, 0).at(0).lsn, 3u);  // before the checkpoint: the older log read once
  EXPECT_EQ(bus.provenance(gone, std::nullopt, 0).at(0).lsn, 8u);  // no record of it here: the log says
  const auto h = bus.history(a);
  ASSERT_EQ(h.size(), 6u);
  EXPECT_EQ(h[0].lsn, 3u);
  EXPECT_EQ(h[5].lsn, 10u);
  EXPECT_EQ(h[5].runs, (std::vector<mmsb::Run>{mmsb::Run{7, 1}}));
  ASSERT_EQ(bus.history(gone).size(), 1u);  // deleted before the checkpoint: only in the older log
  EXPECT_EQ(bus.provenance(a, 1, 0).at(0).lsn, 3u);
  expect_same(bus.history(a), scan_histories(path).at(a), true, "again");
}

// A crash between writing a checkpoint and starting the segment after it leaves the checkpoint's
// lsns inside the last segment, which recovery reads and indexes: the provenance index still
// starts after the checkpoint, and history must still give everything.
TEST(BusHistoryIndexTest, ACheckpointInsideTheLastSegmentStillGivesTheWholeHistory) {
  test::TempDir dir;
  const std::string path = dir.path() + "/bus";
  PageId a = 0;
  Lsn cp = 0;
  {
    Bus bus({.path = path});
    a = bus.create_page(PageSpec{8}).id;
    for (std::uint64_t i = 0; i < 4; ++i) bus.write(a, i, test::filled(1, 1));
    cp = bus.checkpoint();
  }
  std::filesystem::remove(path + "/" + logfmt::segment_file_name(cp + 1));
  Bus bus({.path = path, .must_exist = true});
  EXPECT_EQ(bus.recovery().checkpoint_lsn, cp);
  bus.write(a, 5, test::filled(1, 2));  // written on in the first segment
  const auto h = bus.history(a);
  ASSERT_EQ(h.size(), 5u);
  expect_same(h, scan_histories(path).at(a), true, "after the crash");
}

// Retention removes the log's start (the segments before the oldest checkpoint it keeps): history
// is refused from then on (and nothing changes), also after a reopen; the record index entries of
// the removed segments are dropped.
TEST(BusHistoryIndexTest, RetentionRemovingTheLogStartRefusesHistory) {
  test::TempDir dir;
  const std::string path = dir.path() + "/bus";
  {
    Bus bus({.path = path, .retention = 2});
    const PageId a = bus.create_page(PageSpec{8}).id;
    for (int i = 0; i < 200; ++i) bus.write(a, 0, test::filled(1, static_cast<std::uint8_t>(i)));
    EXPECT_EQ(bus.history(a).size(), 200u);
    const std::uint64_t before = bus.memory().index_bytes;
    bus.checkpoint();  // removes the first segment and its 201 records' entries
    EXPECT_LT(bus.memory().index_bytes, before);
    const Lsn lsn = bus.lsn();
    const std::string msg = test::expect_error(ErrorCode::HistoryUnavailable, [&] { bus.history(a); });
    EXPECT_NE(msg.find("lsn 1"), std::string::npos) << msg;
    EXPECT_EQ(bus.lsn(), lsn);
    bus.write(a, 2, test::filled(1, 2));  // still writable, still refused
    test::expect_error(ErrorCode::HistoryUnavailable, [&] { bus.history(a); });
  }
  Bus bus({.path = path, .must_exist = true, .retention = 1});
  test::expect_error(ErrorCode::HistoryUnavailable, [&] { bus.history(1); });
  test::expect_error(ErrorCode::PageNotFound, [&] { bus.history(2); });
}

TEST(BusHistoryIndexTest, BadCallsAreRefusedAndChangeNothing) {
  Bus bus;
  const PageId a = bus.create_page(PageSpec{8}).id;
  bus.write(a, 0, test::filled(2, 1));
  test::expect_error(ErrorCode::PageNotFound, [&] { bus.history(0); });
  test::expect_error(ErrorCode::PageNotFound, [&] { bus.history(a + 1); });
  bus.begin_transaction();
  bus.write(a, 2, test::filled(2, 2));
  test::expect_error(ErrorCode::InvalidArgument, [&] { bus.history(a); });
  bus.commit_transaction();
  ASSERT_EQ(bus.history(a).size(), 2u);
  auto view = bus.at(bus.lsn());
  test::expect_error(ErrorCode::HistoryUnavailable, [&] { view->history(a); });
  Bus quiet({.keep_history = false});
  const PageId q = quiet.create_page(PageSpec{8}).id;
  quiet.write(q, 0, test::filled(1, 1));
  const std::string msg = test::expect_error(ErrorCode::HistoryUnavailable, [&] { quiet.history(q); });
  EXPECT_NE(msg.find("history=False"), std::string::npos) << msg;
  EXPECT_EQ(bus.lsn(), 3u);
  EXPECT_EQ(bus.history(a).back().lsn, 3u);
}

// The index queue keeps a wave's entries as one run of consecutive lsns; a wave that fails after
// committing some of its pages must leave none of them, in a transaction or alone, and the
// entries of the next commits must follow on (lsns, epochs and sources as the log has them).
void expect_failed_wave_leaves_no_entries(Bus& bus) {
  const PageId a = bus.create_page(PageSpec{8}).id;
  const PageId b = bus.create_page(PageSpec{8}).id;
  const PageId c = bus.create_page(PageSpec{8}).id;
  const PageId d = bus.create_page(PageSpec{8}).id;  // no dependents
  bus.depend(b, std::vector<PageId>{a}, {RecomputeKind::Copy, SemiringKind::SumProduct, "copy"}, {});
  bool fail_now = false;
  bus.depend(c, std::vector<PageId>{b}, {RecomputeKind::Callable, SemiringKind::SumProduct, "test.fn"}, {},
             [&](std::span<std::byte> out, std::span<const PageRecord* const>, std::span<const std::byte* const> ins) {
               if (fail_now) throw std::runtime_error("refused");
               std::memcpy(out.data(), ins[0], out.size());
             });
  bus.write(a, 0, test::filled(8, 1));
  bus.write(d, 0, test::filled(8, 1));
  const auto histories = [&] {
    return Histories{{a, bus.history(a)}, {b, bus.history(b)}, {c, bus.history(c)}, {d, bus.history(d)}};
  };
  const auto expect_unchanged = [&](const Histories& before, const std::string& what) {
    for (PageId p : {a, b, c, d}) expect_same(bus.history(p), before.at(p), true, what + ", page " + std::to_string(p));
  };
  const Histories before = histories();
  ASSERT_EQ(before.at(c).size(), 1u);

  fail_now = true;  // b is committed by the wave before c refuses
  test::expect_error(ErrorCode::Propagation, [&] { bus.write(a, 0, test::filled(8, 2)); });
  expect_unchanged(before, "after the failed wave");
  // In a transaction the failed step alone is undone; the write before it stays.
  bus.begin_transaction();
  bus.write(d, 0, test::filled(8, 3));
  test::expect_error(ErrorCode::Propagation, [&] { bus.write(a, 0, test::filled(8, 4)); });
  bus.commit_transaction();
  Histories kept = before;
  kept[d] = bus.history(d);
  ASSERT_EQ(kept.at(d).size(), before.at(d).size() + 1);
  EXPECT_EQ(kept.at(d).back().lsn, bus.lsn());
  expect_unchanged(kept, "after the transaction with a failed step");
  bus.begin_transaction();
  bus.write(d, 0, test::filled(8, 5));
  bus.rollback_transaction();
  expect_unchanged(kept, "after the rolled-back transaction");

  fail_now = false;
  const Lsn lsn = bus.lsn();
  bus.write(a, 0, test::filled(8, 5));
  const Histories after = histories();
  for (PageId p : {a, b, c}) {
    ASSERT_EQ(after.at(p).size(), before.at(p).size() + 1) << p;
    const HistoryEntry& e = after.at(p).back();
    EXPECT_EQ(e.lsn, lsn + 1 + (p - a)) << p;  // the write, then the wave in canonical order
    EXPECT_EQ(e.epoch, before.at(p).back().epoch + 1) << p;
    EXPECT_EQ(e.source, p == a ? Source::User : Source::Propagation) << p;
  }
}

TEST(BusHistoryIndexTest, AWaveThatFailsHalfwayLeavesNoEntriesAndLaterOnesFollowOn) {
  Bus bus;
  expect_failed_wave_leaves_no_entries(bus);
}

// With one timestamp for every commit, consecutive user commits share a queued run too: the
// failing step's own write extends the run of the write before it in the transaction, so undoing
// the step must give that run back its length, not only drop the entries after it.
TEST(BusHistoryIndexTest, AFailedStepGivesBackTheRunItExtended) {
  BusOptions o;
  o.clock = [] { return std::uint64_t{1'700'000'000'000'000'000}; };
  Bus bus(std::move(o));
  expect_failed_wave_leaves_no_entries(bus);
}

}  // namespace
}  // namespace mmsb
