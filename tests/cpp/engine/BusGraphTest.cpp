// Propagation through the engine: derived pages against a recomputation oracle, atomic rollback
// of a failing wave, and bit-exact replay (reopen, checkpoint + tail) without running recomputes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "TestUtil.hpp"
#include "engine/BusState.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb {
namespace {

constexpr std::uint64_t kElems = 8;

PageSpec f64_page() { return PageSpec{kElems * 8, DType::Float64, {kElems}}; }

std::vector<double> values(Bus& bus, PageId id) {
  std::vector<double> v(kElems);
  std::memcpy(v.data(), bus.page(id).data, kElems * 8);
  return v;
}

void write_value(Bus& bus, PageId id, std::uint64_t elem, double x) {
  bus.write(id, elem * 8, {reinterpret_cast<const std::byte*>(&x), 8});
}

// a, b sources; c = min_plus(a + 1, b + 2); d = copy(c); e = sum_product(c, d) (a diamond).
struct Diamond {
  PageId a, b, c, d, e;
  explicit Diamond(Bus& bus) {
    a = bus.create_page(f64_page()).id;
    b = bus.create_page(f64_page()).id;
    c = bus.create_page(f64_page()).id;
    d = bus.create_page(f64_page()).id;
    e = bus.create_page(f64_page()).id;
    const double w[] = {1.0, 2.0};
    bus.depend(c, std::vector<PageId>{a, b}, {RecomputeKind::Reduce, SemiringKind::MinPlus, ""}, w);
    bus.depend(d, std::vector<PageId>{c}, {RecomputeKind::Copy}, {});
    bus.depend(e, std::vector<PageId>{c, d}, {RecomputeKind::Reduce, SemiringKind::SumProduct, ""}, {});
  }
  void expect_consistent(Bus& bus) const {
    const auto va = values(bus, a), vb = values(bus, b), vc = values(bus, c), vd = values(bus, d), ve = values(bus, e);
    for (std::uint64_t i = 0; i < kElems; ++i) {
      EXPECT_EQ(vc[i], std::min(va[i] + 1.0, vb[i] + 2.0)) << "c[" << i << "]";
      EXPECT_EQ(vd[i], vc[i]) << "d[" << i << "]";
      EXPECT_EQ(ve[i], vc[i] + vd[i]) << "e[" << i << "]";
    }
  }
};

TEST(BusGraphTest, DiamondRecomputesEachNodeOncePerWave) {
  Bus bus;
  Diamond g(bus);
  test::Rng rng(7);
  for (int step = 0; step < 200; ++step) {
    const BusStats before = bus.stats();
    write_value(bus, step % 2 == 0 ? g.a : g.b, test::uniform(rng, 0, kElems - 1),
                static_cast<double>(test::uniform(rng, 0, 20)));
    g.expect_consistent(bus);
    const BusStats after = bus.stats();
    EXPECT_EQ(after.waves - before.waves, 1u);
    EXPECT_LE(after.recomputes - before.recomputes, 3u) << "a node ran twice in one wave";
  }
  EXPECT_GT(bus.stats().cutoffs, 0u) << "some writes do not change min(a+1, b+2): cutoff expected";
}

TEST(BusGraphTest, FailingRecomputeRollsBackTheWholeCommit) {
  Bus bus;
  Diamond g(bus);
  const PageId f = bus.create_page(f64_page()).id;
  bool fail_now = false;
  bus.depend(f, std::vector<PageId>{g.e}, {RecomputeKind::Callable, SemiringKind::SumProduct, "test.fn"}, {},
             [&](std::span<std::byte> out, std::span<const PageRecord* const>, std::span<const std::byte* const> ins) {
               if (fail_now) throw std::runtime_error("refused");
               std::memcpy(out.data(), ins[0], out.size());
             });
  write_value(bus, g.a, 0, 3.0);
  const test::BusState before = test::capture(bus);
  fail_now = true;
  try {
    write_value(bus, g.a, 0, -10.0);
    FAIL() << "the wave should have failed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Propagation);
    EXPECT_NE(std::string(e.what()).find("page " + std::to_string(f)), std::string::npos) << e.what();
  }
  EXPECT_TRUE(test::same_state(before, test::capture(bus)));
  fail_now = false;
  write_value(bus, g.a, 0, -10.0);
  g.expect_consistent(bus);
  EXPECT_EQ(values(bus, f), values(bus, g.e));
}

TEST(BusGraphTest, ReplayReproducesDerivedPagesWithoutRecomputing) {
  test::TempDir dir;
  test::BusState live;
  int calls = 0;
  {
    Bus bus(BusOptions{1, dir.path()});
    Diamond g(bus);
    const PageId f = bus.create_page(f64_page()).id;
    bus.depend(f, std::vector<PageId>{g.d}, {RecomputeKind::Callable, SemiringKind::SumProduct, "test.twice"}, {},
               [&](std::span<std::byte> out, std::span<const PageRecord* const>, std::span<const std::byte* const> ins) {
                 ++calls;
                 const auto* in = reinterpret_cast<const double*>(ins[0]);
                 auto* o = reinterpret_cast<double*>(out.data());
                 for (std::uint64_t i = 0; i < kElems; ++i) o[i] = 2 * in[i];
               });
    test::Rng rng(11);
    for (int step = 0; step < 60; ++step) {
      write_value(bus, step % 3 == 0 ? g.b : g.a, test::uniform(rng, 0, kElems - 1),
                  static_cast<double>(test::uniform(rng, 0, 50)));
      if (step == 30) bus.checkpoint();
    }
    live = test::capture(bus);
    EXPECT_TRUE(bus.verify().ok);
  }
  const int calls_before = calls;
  for (bool whole_log : {false, true}) {
    BusOptions o{1, dir.path()};
    o.read_only = true;
    o.use_checkpoints = !whole_log;
    Bus replayed(std::move(o));
    const test::BusState got = test::capture(replayed);
    ASSERT_EQ(got.pages.size(), live.pages.size());
    for (std::size_t i = 0; i < got.pages.size(); ++i) {
      EXPECT_EQ(got.pages[i].bytes, live.pages[i].bytes) << "page " << got.pages[i].id;
      EXPECT_EQ(got.pages[i].epoch, live.pages[i].epoch) << "page " << got.pages[i].id;
    }
    EXPECT_EQ(got.lsn, live.lsn);
    // The callable is not registered in the replayed bus: its page (only) is reported stale.
    EXPECT_EQ(replayed.stale_pages(), std::vector<PageId>{6});
  }
  EXPECT_EQ(calls, calls_before) << "replay must not run recomputes";
}

TEST(BusGraphTest, CycleAndDeleteErrorsChangeNothing) {
  Bus bus;
  Diamond g(bus);
  const test::BusState before = test::capture(bus);
  const Lsn lsn = bus.lsn();
  EXPECT_THROW(bus.add_edge(g.e, g.a, EdgeKind::Control), Error);
  EXPECT_THROW(bus.depend(g.a, std::vector<PageId>{g.d}, {RecomputeKind::Copy}, {}), Error);
  EXPECT_THROW(bus.delete_page(g.c), Error);
  EXPECT_EQ(bus.lsn(), lsn);
  EXPECT_TRUE(test::same_state(before, test::capture(bus)));
  EXPECT_TRUE(bus.validate_graph().ok);
  EXPECT_EQ(bus.topological_order(), (std::vector<PageId>{g.a, g.b, g.c, g.d, g.e}));
}

// A device_sync child is a copy of its one parent: depend() cannot give it other parents (its
// recompute would silently replace the copy, and a checkpoint could not say which one won).
TEST(BusGraphTest, DependRefusesADeviceSyncChild) {
  Bus bus;
  Diamond g(bus);
  const PageId f = bus.create_page(f64_page()).id;
  bus.add_edge(g.a, f, EdgeKind::DeviceSync);
  const test::BusState before = test::capture(bus);
  const std::string msg =
      test::expect_error(ErrorCode::Graph, [&] { bus.depend(f, std::vector<PageId>{g.b}, {RecomputeKind::Copy}, {}); });
  EXPECT_NE(msg.find("device_sync child"), std::string::npos) << msg;
  EXPECT_TRUE(test::same_state(before, test::capture(bus)));
  EXPECT_TRUE(bus.derivation(f)->implicit);
}

// Waves split into batches whose built-in recomputes run in parallel lanes; everything committed
// must be what one thread commits: bytes, epochs, the lsn of every derived delta, the counters.
// A multi-level graph mixes kernels, copies and (serial) callables, and cutoffs stop branches.
// Pages of 16 KiB, so that batches pass Bus::kWaveLaneBytes and really run in lanes.
TEST(BusGraphTest, ParallelWavesCommitExactlyWhatOneThreadCommits) {
  constexpr std::uint64_t kBig = 2048;
  const PageSpec big{kBig * 8, DType::Float64, {kBig}};
  struct Run {
    test::BusState state;
    std::vector<std::vector<Lsn>> derived_lsns;
  };
  auto run = [&big](unsigned threads) {
    Bus bus(BusOptions{threads});
    test::Rng rng(29);
    std::vector<PageId> ids;
    for (int i = 0; i < 48; ++i) ids.push_back(bus.create_page(big).id);
    std::vector<PageId> derived;
    const SemiringKind kinds[] = {SemiringKind::SumProduct, SemiringKind::MinPlus, SemiringKind::MaxPlus,
                                  SemiringKind::MaxMin};
    for (int i = 0; i < 300; ++i) {
      const PageId child = bus.create_page(big).id;
      std::vector<PageId> parents;
      const auto n = test::uniform(rng, 1, 4);
      while (parents.size() < n) {
        const PageId p = ids[test::uniform(rng, 0, ids.size() - 1)];
        if (std::find(parents.begin(), parents.end(), p) == parents.end()) parents.push_back(p);
      }
      const auto pick = test::uniform(rng, 0, 9);
      if (pick == 0) {
        bus.depend(child, std::span<const PageId>(parents).first(1), {RecomputeKind::Copy}, {});
      } else if (pick == 1) {  // clamps at 100: a cutoff once its inputs are large
        bus.depend(child, parents, {RecomputeKind::Callable, SemiringKind::SumProduct, "test.clamp"}, {},
                   [](std::span<std::byte> out, std::span<const PageRecord* const>, std::span<const std::byte* const> ins) {
                     auto* o = reinterpret_cast<double*>(out.data());
                     for (std::uint64_t k = 0; k < out.size() / 8; ++k) {
                       o[k] = std::min(100.0, reinterpret_cast<const double*>(ins[0])[k]);
                     }
                   });
      } else {
        bus.depend(child, parents, {RecomputeKind::Reduce, kinds[pick % 4], ""}, {});
      }
      ids.push_back(child);
      derived.push_back(child);
    }
    for (int step = 0; step < 30; ++step) {
      DeltaBatch batch;
      for (int k = 0, rows = static_cast<int>(test::uniform(rng, 1, 40)); k < rows; ++k) {
        const double x = static_cast<double>(test::uniform(rng, 0, 200));
        batch.add(ids[test::uniform(rng, 0, 47)], 8 * test::uniform(rng, 0, kBig - 1),
                  {reinterpret_cast<const std::byte*>(&x), 8});
      }
      bus.apply_batch(batch.view());
    }
    Run r{test::capture(bus), {}};
    for (PageId d : derived) {
      r.derived_lsns.emplace_back();
      for (const HistoryEntry& h : bus.history(d)) r.derived_lsns.back().push_back(h.lsn);
    }
    return r;
  };
  const Run one = run(1);
  EXPECT_GT(one.state.stats.recomputes, 1000u);
  EXPECT_GT(one.state.stats.cutoffs, 0u);
  for (unsigned threads : {2u, 3u}) {
    const Run many = run(threads);
    EXPECT_EQ(many.state.lsn, one.state.lsn) << threads << " threads";
    ASSERT_EQ(many.state.pages.size(), one.state.pages.size());
    for (std::size_t i = 0; i < one.state.pages.size(); ++i) {
      EXPECT_EQ(many.state.pages[i].bytes, one.state.pages[i].bytes) << "page " << one.state.pages[i].id;
      EXPECT_EQ(many.state.pages[i].epoch, one.state.pages[i].epoch) << "page " << one.state.pages[i].id;
      EXPECT_EQ(many.state.pages[i].last_lsn, one.state.pages[i].last_lsn) << "page " << one.state.pages[i].id;
    }
    EXPECT_EQ(many.derived_lsns, one.derived_lsns) << threads << " threads";
    EXPECT_EQ(many.state.stats.recomputes, one.state.stats.recomputes);
    EXPECT_EQ(many.state.stats.cutoffs, one.state.stats.cutoffs);
    EXPECT_EQ(many.state.stats.memo_skips, one.state.stats.memo_skips);
    EXPECT_EQ(many.state.stats.derived_deltas, one.state.stats.derived_deltas);
  }
}

// Four 9 MiB siblings hold more staging bytes than a wave batch may (Bus::kWaveBatchBytes), so
// the wave recomputes them in two prefixes; the grandchild reads siblings from both. Every page
// still recomputes once, in canonical order (their deltas' lsns), to the oracle's bytes.
TEST(BusGraphTest, ABatchBeyondTheStagingBoundRecomputesInOrderOnce) {
  constexpr std::uint64_t kHuge = (std::uint64_t{9} << 20) / 8;
  static_assert(4 * kHuge * 8 > Bus::kWaveBatchBytes && 2 * kHuge * 8 <= Bus::kWaveBatchBytes);
  const PageSpec huge{kHuge * 8, DType::Float64, {kHuge}};
  Bus bus;
  const PageId root = bus.create_page(huge).id;
  std::vector<PageId> siblings;
  for (int i = 0; i < 4; ++i) {
    siblings.push_back(bus.create_page(huge).id);
    bus.depend(siblings.back(), std::vector<PageId>{root}, {RecomputeKind::Copy}, {});
  }
  const PageId grandchild = bus.create_page(huge).id;
  bus.depend(grandchild, std::vector<PageId>{siblings.front(), siblings.back()},
             {RecomputeKind::Reduce, SemiringKind::SumProduct, ""}, {});
  for (int step = 1; step <= 3; ++step) {
    const BusStats before = bus.stats();
    const std::uint64_t elem = static_cast<std::uint64_t>(step) * 100'003 % kHuge;
    const Lsn wrote = bus.lsn() + 1;
    const double x = step;
    bus.write(root, elem * 8, {reinterpret_cast<const std::byte*>(&x), 8});
    EXPECT_EQ(bus.stats().recomputes - before.recomputes, 5u) << "step " << step;
    Lsn last = wrote;
    for (PageId p : siblings) {
      const std::vector<HistoryEntry> h = bus.history(p);
      ASSERT_FALSE(h.empty());
      EXPECT_GT(h.back().lsn, last) << "page " << p << " out of canonical order, step " << step;
      last = h.back().lsn;
      double got = 0;
      std::memcpy(&got, bus.page(p).data + elem * 8, 8);
      EXPECT_EQ(got, x) << "page " << p;
    }
    EXPECT_GT(bus.history(grandchild).back().lsn, last);
    double got = 0;
    std::memcpy(&got, bus.page(grandchild).data + elem * 8, 8);
    EXPECT_EQ(got, 2 * x);
  }
}

}  // namespace
}  // namespace mmsb
