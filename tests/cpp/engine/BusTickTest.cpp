// The ingest queue and tick: submissions commit in ring order as one atomic record, invalid ones
// are reported and skipped, a failing tick loses nothing, producers on many threads lose or
// duplicate nothing (checked against the reference model), and gc() changes no committed state.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb {
namespace {

std::span<const std::byte> as_bytes(const std::uint64_t& v) { return {reinterpret_cast<const std::byte*>(&v), 8}; }

TEST(BusTickTest, SubmissionsCommitInOrderAsOneRecord) {
  test::TempDir dir;
  test::BusState after;
  {
    Bus bus({.path = dir.path()});
    const PageId a = bus.create_page(PageSpec{64}).id;
    const PageId b = bus.create_page(PageSpec{64}).id;
    test::RefModel model;
    model.create(a, 64);
    model.create(b, 64);
    test::Rng rng(3);
    DeltaBatch batch;
    batch.add(b, 8, test::filled(8, 7));
    batch.add(a, 0, test::filled(4, 9));
    const std::uint64_t offsets[] = {0, 32};
    const std::uint64_t lengths[] = {4, 4};
    const test::Bytes two = test::filled(8, 5);
    // single run, batch, multi-run delta, expect_epoch delta (sees everything before it), single run
    std::vector<Delta> ds;
    ds.push_back(Delta::at(a, 16, test::filled(8, 1)));
    ds.push_back(Delta::runs(a, offsets, lengths, two));
    Delta guarded = Delta::at(a, 40, test::filled(2, 3));
    bus.submit(Delta(ds[0]));
    bus.submit(batch.view());
    bus.submit(Delta(ds[1]));
    guarded.expect_epoch = 3;  // a: single (1), batch row (2), multi-run (3)
    bus.submit(Delta(guarded));
    bus.submit(Delta::at(b, 0, test::filled(8, 2)));
    EXPECT_EQ(bus.queue_depth(), 5u);
    model.apply(ds[0]);
    model.apply_batch(batch.view());
    model.apply(ds[1]);
    model.apply(guarded);
    model.apply(Delta::at(b, 0, test::filled(8, 2)));
    const Lsn before = bus.lsn();
    const TickReport r = bus.tick();
    EXPECT_EQ(r.tick, 1u);
    EXPECT_EQ(r.submissions, 5u);
    EXPECT_EQ(r.rejected, 0u) << (r.rejections.empty() ? "" : r.rejections[0]);
    EXPECT_EQ(r.deltas_applied, 6u);
    EXPECT_EQ(r.first_lsn, before);
    EXPECT_EQ(r.last_lsn, before + 6);
    EXPECT_EQ(bus.queue_depth(), 0u);
    EXPECT_TRUE(test::same_as_model(bus, model));
    EXPECT_EQ(bus.stats().ticks, 1u);
    EXPECT_EQ(bus.stats().submits, 5u);
    after = test::capture(bus);
  }
  // The tick was one record: reopening replays it whole.
  Bus again({.path = dir.path(), .must_exist = true});
  test::BusState got = test::capture(again);
  got.stats = after.stats;
  EXPECT_TRUE(test::same_state(after, got));
}

TEST(BusTickTest, InvalidSubmissionsAreReportedAndSkipped) {
  Bus bus;
  const PageId a = bus.create_page(PageSpec{32}).id;
  test::RefModel model;
  model.create(a, 32);
  bus.submit(Delta::at(a, 0, test::filled(4, 1)));
  bus.submit(Delta::at(999, 0, test::filled(4, 1)));  // no such page
  bus.submit(Delta::at(a, 30, test::filled(4, 1)));   // past the end
  Delta stale = Delta::at(a, 8, test::filled(1, 1));
  stale.expect_epoch = 0;  // the first submission moves it to 1
  bus.submit(Delta(stale));
  DeltaBatch bad;
  bad.add(a, 4, test::filled(2, 6));
  bad.add(a, 31, test::filled(2, 6));  // the whole batch is rejected
  bus.submit(bad.view());
  bus.submit(Delta::at(a, 12, test::filled(4, 2)));
  model.apply(Delta::at(a, 0, test::filled(4, 1)));
  model.apply(Delta::at(a, 12, test::filled(4, 2)));
  const TickReport r = bus.tick();
  EXPECT_EQ(r.submissions, 6u);
  EXPECT_EQ(r.rejected, 4u);
  ASSERT_EQ(r.rejections.size(), 4u);
  EXPECT_NE(r.rejections[0].find("submission 2"), std::string::npos) << r.rejections[0];
  EXPECT_NE(r.rejections[0].find("999"), std::string::npos) << r.rejections[0];
  EXPECT_NE(r.rejections[2].find("epoch"), std::string::npos) << r.rejections[2];
  EXPECT_EQ(r.deltas_applied, 2u);
  EXPECT_TRUE(test::same_as_model(bus, model));
  EXPECT_EQ(bus.stats().submits_rejected, 4u);
}

TEST(BusTickTest, FailingTickChangesNothingAndKeepsItsSubmissions) {
  Bus bus;
  const PageId a = bus.create_page(PageSpec{8, DType::Float64, {1}}).id;
  const PageId c = bus.create_page(PageSpec{8, DType::Float64, {1}}).id;
  bool refuse = false;
  bus.depend(c, std::vector<PageId>{a}, {RecomputeKind::Callable, SemiringKind::SumProduct, "test.fn"}, {},
             [&](std::span<std::byte> out, std::span<const PageRecord* const>, std::span<const std::byte* const> ins) {
               if (refuse) throw std::runtime_error("refused");
               std::memcpy(out.data(), ins[0], out.size());
             });
  const double x = 2.5;
  bus.submit(Delta::at(a, 0, {reinterpret_cast<const std::byte*>(&x), 8}));
  refuse = true;
  const test::BusState before = test::capture(bus);
  EXPECT_EQ(test::expect_error(ErrorCode::Propagation, [&] { bus.tick(); }).find("page " + std::to_string(c)) !=
                std::string::npos,
            true);
  EXPECT_TRUE(test::same_state(before, test::capture(bus)));
  EXPECT_EQ(bus.queue_depth(), 1u);  // the submission waits for the next tick
  EXPECT_EQ(bus.stats().ticks, 0u);
  refuse = false;
  const TickReport r = bus.tick();
  EXPECT_EQ(r.deltas_applied, 1u);
  EXPECT_EQ(r.derived_deltas, 1u);
  double got = 0;
  std::memcpy(&got, bus.page(c).data, 8);
  EXPECT_EQ(got, 2.5);
  EXPECT_EQ(bus.queue_depth(), 0u);
}

TEST(BusTickTest, FullQueueRaisesOrBlocksUntilATick) {
  Bus bus({.queue_capacity = 4});
  const PageId a = bus.create_page(PageSpec{64}).id;
  for (std::uint64_t i = 0; i < 4; ++i) bus.submit(Delta::at(a, i * 8, as_bytes(i)), false);
  const test::BusState before = test::capture(bus);
  const std::string msg = test::expect_error(ErrorCode::QueueFull, [&] { bus.submit(Delta::at(a, 0, test::filled(1, 1)), false); });
  EXPECT_NE(msg.find("4 submissions"), std::string::npos) << msg;
  EXPECT_EQ(bus.queue_depth(), 4u);
  EXPECT_TRUE(test::same_state(before, test::capture(bus)));
  std::atomic<bool> done{false};
  std::thread producer([&] {
    const std::uint64_t v = 42;
    bus.submit(Delta::at(a, 56, as_bytes(v)), true);  // blocks until the tick below drains
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(done.load());
  EXPECT_EQ(bus.tick().deltas_applied, 4u);
  producer.join();
  EXPECT_EQ(bus.tick().deltas_applied, 1u);
  EXPECT_EQ(bus.stats().queue_high_water, 4u);
}

TEST(BusTickTest, CloseWakesABlockedProducer) {
  Bus bus({.queue_capacity = 1});
  const PageId a = bus.create_page(PageSpec{8}).id;
  bus.submit(Delta::at(a, 0, test::filled(1, 1)));
  std::atomic<int> code{-1};
  std::thread producer([&] {
    try {
      bus.submit(Delta::at(a, 0, test::filled(1, 2)));
    } catch (const Error& e) {
      code = static_cast<int>(e.code());
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  bus.close();
  producer.join();
  EXPECT_EQ(code.load(), static_cast<int>(ErrorCode::Closed));
  EXPECT_EQ(bus.stats().submits_discarded, 1u);
  test::expect_error(ErrorCode::Closed, [&] { bus.submit(Delta::at(a, 0, test::filled(1, 3))); });
}

// 4 producers x 250k deltas through a small ring, ticked concurrently: each producer owns a page
// and writes its sequence number i at slot i % 64, so a lost delta leaves the epoch short and a
// duplicated or reordered one leaves it long or a slot not holding its last value.
TEST(BusTickTest, ManyProducersLoseAndDuplicateNothing) {
  constexpr int kProducers = 4;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr std::uint64_t kPerProducer = 20'000;
#else
  constexpr std::uint64_t kPerProducer = 250'000;
#endif
  constexpr std::uint64_t kSlots = 64;
  Bus bus({.threads = 2, .queue_capacity = 4096});
  std::vector<PageId> pages;
  for (int p = 0; p < kProducers; ++p) pages.push_back(bus.create_page(PageSpec{kSlots * 8}).id);
  std::atomic<int> running{kProducers};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (std::uint64_t i = 1; i <= kPerProducer; ++i) {
        if (i % 3 == 0) {
          while (true) {
            try {
              bus.submit(Delta::at(pages[p], (i % kSlots) * 8, as_bytes(i)), false);
              break;
            } catch (const Error& e) {
              ASSERT_EQ(e.code(), ErrorCode::QueueFull);
              std::this_thread::yield();
            }
          }
        } else {
          bus.submit(Delta::at(pages[p], (i % kSlots) * 8, as_bytes(i)), true);
        }
      }
      running.fetch_sub(1);
    });
  }
  std::uint64_t applied = 0;
  while (running.load() > 0 || bus.queue_depth() > 0) applied += bus.tick().deltas_applied;
  for (auto& t : producers) t.join();
  applied += bus.tick().deltas_applied;
  EXPECT_EQ(applied, kProducers * kPerProducer);
  for (int p = 0; p < kProducers; ++p) {
    const PageRecord& r = bus.page(pages[p]);
    EXPECT_EQ(r.epoch.load(), kPerProducer) << "producer " << p;
    for (std::uint64_t s = 0; s < kSlots; ++s) {
      std::uint64_t v = 0;
      std::memcpy(&v, r.data + s * 8, 8);
      std::uint64_t want = kPerProducer - ((kPerProducer - s) % kSlots);  // last i with i % 64 == s
      EXPECT_EQ(v, want) << "producer " << p << " slot " << s;
    }
  }
  EXPECT_EQ(bus.stats().submits, kProducers * kPerProducer);
  EXPECT_LE(bus.stats().queue_high_water, bus.queue_capacity());
}

TEST(BusTickTest, ReportIsConsistentWithStatsAndBudgets) {
  Bus bus;
  const PageId a = bus.create_page(PageSpec{8 * 16, DType::Float64, {16}}).id;
  const PageId c = bus.create_page(PageSpec{8 * 16, DType::Float64, {16}}).id;
  bus.depend(c, std::vector<PageId>{a}, {RecomputeKind::Copy}, {});
  TickOptions o;
  o.apply_budget_ns = 1;  // every tick that applies anything overruns it
  o.validate_sample = 1;
  bus.set_tick_options(o);
  const BusStats s0 = bus.stats();
  std::uint64_t deltas = 0;
  for (int t = 0; t < 5; ++t) {
    for (std::uint64_t i = 0; i < 10; ++i) {
      const double v = static_cast<double>(t * 10 + i);
      bus.submit(Delta::at(a, i * 8, {reinterpret_cast<const std::byte*>(&v), 8}));
    }
    const TickReport r = bus.tick();
    deltas += r.deltas_applied;
    std::uint64_t sum = 0;
    for (std::uint64_t ns : r.phase_ns) sum += ns;
    EXPECT_LE(sum, r.total_ns);
    EXPECT_EQ(r.last_lsn - r.first_lsn, r.deltas_applied + r.derived_deltas);
    EXPECT_EQ(r.recomputes, 1u);
    EXPECT_EQ(r.validated, 1u);
    EXPECT_TRUE(r.validation_failures.empty());
    ASSERT_FALSE(r.overruns.empty());
    EXPECT_EQ(r.overruns[0], "apply");
  }
  const BusStats s1 = bus.stats();
  EXPECT_EQ(s1.deltas_applied - s0.deltas_applied, deltas);
  EXPECT_EQ(s1.ticks, 5u);
  EXPECT_EQ(s1.tick_overruns, 5u);
  EXPECT_EQ(bus.tick_latency().count(), 5u);
  EXPECT_EQ(std::memcmp(bus.page(a).data, bus.page(c).data, 16 * 8), 0);
}

TEST(BusTickTest, SampledValidationCatchesAnImpureRecompute) {
  Bus bus;
  const PageId a = bus.create_page(PageSpec{8}).id;
  const PageId c = bus.create_page(PageSpec{8}).id;
  std::uint64_t calls = 0;
  bus.depend(c, std::vector<PageId>{a}, {RecomputeKind::Callable, SemiringKind::SumProduct, "test.counter"}, {},
             [&](std::span<std::byte> out, std::span<const PageRecord* const>, std::span<const std::byte* const>) {
               ++calls;  // depends on how often it ran, not on its parent
               std::memcpy(out.data(), &calls, 8);
             });
  TickOptions o;
  o.validate_sample = 4;
  bus.set_tick_options(o);
  bus.submit(Delta::at(a, 0, test::filled(1, 1)));
  const TickReport r = bus.tick();
  EXPECT_EQ(r.validated, 1u);
  ASSERT_EQ(r.validation_failures.size(), 1u);
  EXPECT_EQ(r.validation_failures[0], c);
  EXPECT_EQ(bus.stats().validation_failures, 1u);
}

// What a callable throws that is not a std::exception (the bindings' KeyboardInterrupt) is the
// caller's, not a failed recompute: a wave rolls back and lets it through unchanged; a tick's
// sampled validation ends there and the tick, whose commit stands, rethrows it at its end.
struct StopRequest {
  int code;
};

TEST(BusTickTest, ANonStdExceptionFromARecomputePassesThroughUnchangedAfterRollback) {
  Bus bus;
  const PageId a = bus.create_page(PageSpec{8}).id;
  const PageId c = bus.create_page(PageSpec{8}).id;
  bool stop = false;
  bus.depend(c, std::vector<PageId>{a}, {RecomputeKind::Callable, SemiringKind::SumProduct, "test.stop"}, {},
             [&](std::span<std::byte> out, std::span<const PageRecord* const>, std::span<const std::byte* const> ins) {
               if (stop) throw StopRequest{7};
               std::memcpy(out.data(), ins[0], out.size());
             });
  stop = true;
  const test::BusState before = test::capture(bus);
  try {
    bus.write(a, 0, test::filled(8, 3));
    ADD_FAILURE() << "the write did not throw";
  } catch (const StopRequest& s) {
    EXPECT_EQ(s.code, 7);
  }
  EXPECT_TRUE(test::same_state(before, test::capture(bus)));
  EXPECT_TRUE(bus.verify().ok);
  stop = false;
  bus.write(a, 0, test::filled(8, 4));
  EXPECT_EQ(std::memcmp(bus.page(c).data, test::filled(8, 4).data(), 8), 0);
}

TEST(BusTickTest, ANonStdExceptionFromSampledValidationComesAfterTheTick) {
  Bus bus;
  const PageId a = bus.create_page(PageSpec{8}).id;
  const PageId c = bus.create_page(PageSpec{8}).id;
  int calls = 0;
  bus.depend(c, std::vector<PageId>{a}, {RecomputeKind::Callable, SemiringKind::SumProduct, "test.stop"}, {},
             [&](std::span<std::byte> out, std::span<const PageRecord* const>, std::span<const std::byte* const> ins) {
               if (++calls == 3) throw StopRequest{9};  // 1: depend, 2: the tick's wave, 3: validation
               std::memcpy(out.data(), ins[0], out.size());
             });
  TickOptions o;
  o.validate_sample = 1;
  bus.set_tick_options(o);
  std::vector<EventKind> events;
  bus.set_event_sink([&](std::span<const BusEvent> batch) {
    for (const BusEvent& e : batch) events.push_back(e.kind);
  }, ~0u);
  bus.submit(Delta::at(a, 0, test::filled(8, 5)));
  const Lsn lsn = bus.lsn();
  EXPECT_THROW(bus.tick(), StopRequest);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(bus.lsn(), lsn + 2);  // the submission and its derived delta
  EXPECT_EQ(std::memcmp(bus.page(c).data, test::filled(8, 5).data(), 8), 0);
  EXPECT_EQ(bus.stats().ticks, 1u);
  EXPECT_EQ(bus.queue_depth(), 0u);
  EXPECT_NE(std::find(events.begin(), events.end(), EventKind::Tick), events.end());
  const TickReport r = bus.tick();
  EXPECT_EQ(r.validated, 1u);
  EXPECT_TRUE(r.validation_failures.empty());
}

TEST(BusTickTest, GcKeepsStateAndHistoryAndReleasesFreedPages) {
  Bus bus;
  std::vector<PageId> ids;
  for (int i = 0; i < 4096; ++i) ids.push_back(bus.create_page(PageSpec{1024}).id);
  test::Rng rng(11);
  for (int i = 0; i < 2000; ++i) {
    bus.write(ids[test::uniform(rng, 0, ids.size() - 1)], test::uniform(rng, 0, 1000), test::random_bytes(rng, 16));
  }
  for (std::size_t i = 0; i < ids.size(); i += 2) bus.delete_page(ids[i]);  // half of each slab
  for (std::size_t i = 1; i < 2048; i += 2) bus.delete_page(ids[i]);  // the first 2 MiB slab wholly
  const test::BusState before = test::capture(bus);
  const PageId probe = ids.back();
  const auto history_before = bus.history(probe);
  const MemoryReport m0 = bus.memory();
  const GcReport g = bus.gc();
  const MemoryReport m1 = bus.memory();
  test::BusState after = test::capture(bus);
  after.stats = before.stats;
  EXPECT_TRUE(test::same_state(before, after));
  const auto history_after = bus.history(probe);
  ASSERT_EQ(history_before.size(), history_after.size());
  for (std::size_t i = 0; i < history_before.size(); ++i) EXPECT_EQ(history_before[i].lsn, history_after[i].lsn);
  EXPECT_GE(g.arena_bytes_released, std::uint64_t{2} << 20);
  EXPECT_EQ(g.bytes_freed, g.arena_bytes_released + g.cache_bytes_freed + g.index_bytes_freed);
  EXPECT_EQ(m0.total_bytes() - m1.total_bytes(), g.bytes_freed);
  EXPECT_TRUE(bus.verify().ok);
  EXPECT_EQ(bus.stats().gc_runs, 1u);
}

// The retention runs at each checkpoint (and gc): the index entries of the lsns it dropped go
// with the log, on a directory bus as in memory.
TEST(BusTickTest, ACheckpointDropsIndexEntriesBeyondTheRetention) {
  test::TempDir dir;
  Bus bus({.path = dir.path(), .durability = Durability::None, .retention = 1});
  const PageId a = bus.create_page(PageSpec{8}).id;
  const std::uint64_t one = 1, two = 2;
  bus.write(a, 0, as_bytes(one));  // epoch 1
  bus.checkpoint();
  bus.write(a, 0, as_bytes(two));  // epoch 2
  const std::uint64_t before = bus.memory().index_bytes;
  bus.checkpoint();                // the first checkpoint and the log before it go
  EXPECT_LT(bus.memory().index_bytes, before);
  test::expect_error(ErrorCode::HistoryUnavailable, [&] { bus.provenance(a, 1, 4); });
  // epoch 2 is the page's state at the oldest retained checkpoint: its producer stays indexed.
  const auto p2 = bus.provenance(a, 2, 4);
  ASSERT_EQ(p2.size(), 1u);
  EXPECT_EQ(p2[0].epoch, 2u);
  EXPECT_EQ(bus.gc().index_bytes_freed, 0u);  // nothing left for it
}

}  // namespace
}  // namespace mmsb
