// Provenance of propagated deltas: the bus keeps the parent list each one was computed from and
// reads the parents' epochs back from its index, so these suites check the epochs it gives
// against the ones the wave logged (the Derived ops' inputs) through everything that moves the
// index: parents changed by depend and remove_edge, deferred waves, cutoffs, rolled-back
// transactions, checkpoints whose retention trims the index (the inputs of the derived deltas
// kept below its floor are copied out first), gc and reopens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <vector>

#include "TestUtil.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/engine/ParentLists.hpp"

namespace mmsb {
namespace {

using Inputs = std::vector<std::pair<PageId, Epoch>>;

constexpr std::uint64_t kElems = 8;
const PageSpec kSpec{kElems * sizeof(double), DType::Float64, {kElems}};

test::Bytes doubles(std::initializer_list<double> v) {
  test::Bytes out(v.size() * sizeof(double));
  std::memcpy(out.data(), std::data(v), out.size());
  return out;
}

RecomputeSpec sum() {
  RecomputeSpec fn;
  fn.kind = RecomputeKind::Reduce;
  fn.semiring = SemiringKind::SumProduct;
  return fn;
}

// The provenance step of every epoch of `id` that the bus still answers, newest first.
std::vector<ProvenanceStep> steps_of(Bus& bus, PageId id) {
  std::vector<ProvenanceStep> out;
  for (Epoch e = bus.page(id).epoch.load(); e > 0; --e) {
    try {
      out.push_back(bus.provenance(id, e, 0).at(0));
    } catch (const Error& err) {
      if (err.code() != ErrorCode::HistoryUnavailable) throw;
      break;
    }
  }
  return out;
}

// A directory bus (reopened now and then) and an in-memory bus fed the same calls, both keeping
// two checkpoints; the oracle is every Derived op the directory's log has held, read before each
// call that may remove segments.
class ProvenanceInputsTest : public ::testing::Test {
 protected:
  ProvenanceInputsTest() { open(false); }

  BusOptions dir_options(bool must_exist) const {
    return BusOptions{.path = dir_.path() + "/bus", .must_exist = must_exist, .retention = 2};
  }
  void open(bool must_exist) {
    if (dir_bus_) absorb_log();
    dir_bus_.reset();
    dir_bus_ = std::make_unique<Bus>(dir_options(must_exist));
  }
  template <class Fn>
  void each(Fn&& fn) {
    fn(*dir_bus_);
    fn(mem_bus_);
  }
  // Called before every call that may write a checkpoint or remove segments, so reading on from
  // the newest checkpoint misses nothing.
  void absorb_log() {
    test::for_each_logged_op(
        dir_.path() + "/bus",
        [&](Lsn lsn, const LogOp& op) {
          if (const auto* d = std::get_if<DerivedOp>(&op)) logged_[lsn] = d->inputs;
        },
        true);
  }
  // Each propagated delta provenance answers for names the parents and epochs its wave logged
  // (lsns agree on both buses; which epochs each still answers may not: a reopened bus indexes
  // from its checkpoint on).
  void check(const std::string& when) {
    absorb_log();
    for (PageId id = 1; id < next_id_; ++id) {
      for (Bus* bus : {dir_bus_.get(), &mem_bus_}) {
        const std::string what = when + ", page " + std::to_string(id) + (bus == &mem_bus_ ? " (in memory)" : "");
        for (const ProvenanceStep& s : steps_of(*bus, id)) {
          if (s.source != Source::Propagation) {
            EXPECT_TRUE(s.inputs.empty()) << what << " epoch " << s.epoch;
            continue;
          }
          const auto logged = logged_.find(s.lsn);
          ASSERT_NE(logged, logged_.end()) << what << ": no Derived op logged at lsn " << s.lsn;
          EXPECT_EQ(s.inputs, logged->second) << what << " epoch " << s.epoch << " (lsn " << s.lsn << ")";
          ++derived_checked_;
        }
      }
    }
  }

  test::TempDir dir_;
  std::unique_ptr<Bus> dir_bus_;
  Bus mem_bus_{BusOptions{.retention = 2}};
  PageId next_id_ = 1;
  std::map<Lsn, Inputs> logged_;
  std::size_t derived_checked_ = 0;
};

TEST_F(ProvenanceInputsTest, EveryPropagatedDeltaNamesTheInputsItsWaveLogged) {
  test::Rng rng(20261130);
  const auto pick = [&](PageId below) { return static_cast<PageId>(test::uniform(rng, 1, below - 1)); };
  const auto value = [&] { return static_cast<double>(test::uniform(rng, 0, 9)); };
  std::map<PageId, std::vector<PageId>> parents;  // the derivations made (ids only grow along edges: no cycle)
  for (int i = 0; i < 12; ++i) {
    each([&](Bus& b) { next_id_ = b.create_page(kSpec).id + 1; });
  }
  const auto write = [&] {
    const PageId id = pick(next_id_);
    const std::uint64_t at = 8 * test::uniform(rng, 0, kElems - 1);
    const test::Bytes v = doubles({value()});
    each([&](Bus& b) { b.write(id, at, v); });
  };
  for (int step = 0; step < 500 / test::kSanitizerScale; ++step) {
    const auto what = test::uniform(rng, 0, 99);
    if (what < 30) {
      write();
    } else if (what < 38) {
      DeltaBatch batch;
      for (int k = 0, rows = static_cast<int>(test::uniform(rng, 1, 12)); k < rows; ++k) {
        batch.add(pick(next_id_), 8 * test::uniform(rng, 0, kElems - 1), doubles({value()}));
      }
      each([&](Bus& b) { b.apply_batch(batch.view()); });
    } else if (what < 50) {  // a new derivation, or new parents for one: a fresh parent list
      const PageId child = static_cast<PageId>(test::uniform(rng, 3, next_id_ - 1));
      std::vector<PageId> ps;
      for (std::uint64_t k = 0, n = test::uniform(rng, 1, 3); k < n; ++k) {
        const PageId p = pick(child);
        if (std::find(ps.begin(), ps.end(), p) == ps.end()) ps.push_back(p);
      }
      // Zero weights make cutoffs: a parent changes, its child's bytes do not.
      std::vector<double> weights;
      if (test::uniform(rng, 0, 1) == 1) {
        for (std::size_t k = 0; k < ps.size(); ++k) weights.push_back(static_cast<double>(test::uniform(rng, 0, 2)));
      }
      each([&](Bus& b) { b.depend(child, ps, sum(), weights); });
      parents[child] = ps;
    } else if (what < 56 && !parents.empty()) {  // one parent fewer: the list changes in place
      auto it = parents.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(test::uniform(rng, 0, parents.size() - 1)));
      if (it->second.size() < 2) continue;
      const PageId parent = it->second.back();
      each([&](Bus& b) { b.remove_edge(parent, it->first); });
      it->second.pop_back();
      write();  // its wave, from the shorter list
    } else if (what < 62) {  // deferred: the parents move on before propagate()
      each([&](Bus& b) { b.set_propagation(PropagationMode::Deferred); });
      for (int k = 0; k < 3; ++k) write();
      each([&](Bus& b) {
        b.propagate();
        b.set_propagation(PropagationMode::Eager);
      });
    } else if (what < 70) {  // a transaction whose waves commit, or are taken back
      const bool rollback = test::uniform(rng, 0, 1) == 1;
      const PageId a = pick(next_id_), c = pick(next_id_);
      const test::Bytes x = doubles({value()}), y = doubles({value(), value()});
      each([&](Bus& b) {
        b.begin_transaction();
        b.write(a, 0, x);
        b.write(c, 16, y);
        rollback ? b.rollback_transaction() : b.commit_transaction();
      });
    } else if (what < 78) {  // retention: the index is trimmed below the older checkpoint
      absorb_log();
      each([&](Bus& b) { b.checkpoint(); });
    } else if (what < 82) {
      absorb_log();
      each([&](Bus& b) { b.gc(); });
    } else if (what < 86) {
      open(true);
    } else if (what < 92) {
      ASSERT_NO_FATAL_FAILURE(check("step " + std::to_string(step)));
    }
  }
  ASSERT_NO_FATAL_FAILURE(check("the end"));
  open(true);
  ASSERT_NO_FATAL_FAILURE(check("reopened at the end"));
  EXPECT_GT(derived_checked_, 200u / test::kSanitizerScale);
}

// A child whose newest delta lies below the trim's floor while a parent moved on after it (its
// zero weight cuts the changes off at the child): the trim drops the parent's older entries, so
// the child's inputs must have been copied out first. They stay what the wave logged, on a
// directory bus and in memory.
TEST_F(ProvenanceInputsTest, InputsOfADeltaKeptBelowTheTrimFloorStayExact) {
  PageId a = 0, b = 0, c = 0, other = 0;
  each([&](Bus& bus) {
    a = bus.create_page(kSpec).id;
    b = bus.create_page(kSpec).id;
    c = bus.create_page(kSpec).id;
    other = bus.create_page(kSpec).id;
    const std::vector<PageId> ps{a, b};
    bus.depend(c, ps, sum(), std::vector<double>{1, 0});
    bus.write(a, 0, doubles({1}));
    for (double v = 1; v < 4; ++v) bus.write(b, 0, doubles({v}));
  });
  next_id_ = other + 1;
  const Epoch ce = mem_bus_.page(c).epoch.load();
  const ProvenanceStep before = mem_bus_.provenance(c, ce, 0).at(0);
  ASSERT_EQ(before.source, Source::Propagation);
  ASSERT_EQ(before.inputs.size(), 2u);
  EXPECT_EQ(before.inputs[1].first, b);
  EXPECT_EQ(before.inputs[1].second + 3, mem_bus_.page(b).epoch.load());  // b changed 3 times since
  ASSERT_NO_FATAL_FAILURE(check("before the checkpoints"));
  // Three checkpoints, two kept: the floor is the second, past b's changes.
  for (int i = 0; i < 3; ++i) {
    absorb_log();
    each([&](Bus& bus) {
      bus.write(other, 0, doubles({static_cast<double>(i)}));
      bus.checkpoint();
      bus.gc();
    });
  }
  ASSERT_EQ(mem_bus_.page(c).epoch.load(), ce);
  for (Bus* bus : {dir_bus_.get(), &mem_bus_}) {
    test::expect_error(ErrorCode::HistoryUnavailable, [&] { bus->provenance(b, 1, 0); });  // trimmed
    const ProvenanceStep after = bus->provenance(c, ce, 0).at(0);
    EXPECT_EQ(after.lsn, before.lsn);
    EXPECT_EQ(after.inputs, before.inputs);
  }
  ASSERT_NO_FATAL_FAILURE(check("after the trim"));
}

// Recovery keeps a propagated delta's parent list and reads its epochs from the index later, so
// a log whose Derived op names a page that is not there (checksums right, meaning not) fails the
// open with LogCorrupt naming it; the untouched log opens.
TEST(ProvenanceRecoveryTest, ADerivedOpNamingNoPageFailsTheOpen) {
  test::TempDir dir;
  const std::string path = dir.path() + "/bus";
  {
    Bus bus({.path = path});
    const PageId a = bus.create_page(kSpec).id;
    const PageId c = bus.create_page(kSpec).id;
    bus.depend(c, std::vector<PageId>{a}, RecomputeSpec{RecomputeKind::Copy}, {});
    bus.write(a, 0, doubles({5}));
    ASSERT_EQ(bus.stats().derived_deltas, 1u);
  }
  const std::string good = dir.path() + "/good";
  test::copy_dir(path, good);
  int edited = 0;
  test::rewrite_log(path, [&](LogOp& op) {
    if (auto* d = std::get_if<DerivedOp>(&op)) {
      d->inputs.at(0).first = 99;
      ++edited;
    }
  });
  ASSERT_EQ(edited, 1);
  const std::string msg = test::expect_error(ErrorCode::LogCorrupt, [&] { Bus bus({.path = path, .must_exist = true}); });
  EXPECT_NE(msg.find("names page 99 as an input"), std::string::npos) << msg;
  Bus bus({.path = good, .must_exist = true});
  EXPECT_EQ(bus.provenance(2, 1, 0).at(0).inputs, (Inputs{{1, 1}}));
}

// Each parent list is kept once, however many deltas and derivations share it; a gc drops the
// lists nothing refers to any more (derivations replaced, their deltas trimmed).
TEST(ProvenanceRecoveryTest, ParentListsAreSharedAndDroppedWhenUnused) {
  ParentLists lists;
  const std::vector<PageId> ab{1, 2}, ba{2, 1};
  const ParentLists::List* x = lists.intern(ab);
  EXPECT_EQ(lists.intern(std::vector<PageId>{1, 2}), x);
  const ParentLists::List* y = lists.intern(ba);
  EXPECT_NE(x, y);
  EXPECT_EQ(*y, ba);
  EXPECT_EQ(lists.size(), 2u);
  const std::uint64_t two = lists.bytes();
  lists.retain([&](const ParentLists::List* l) { return l == y; });
  EXPECT_EQ(lists.size(), 1u);
  EXPECT_LT(lists.bytes(), two);
  EXPECT_EQ(lists.intern(ba), y);

  // On a bus: 40 re-depends, each with new parents, then checkpoints and gc past all but the
  // newest: the list it names must survive the drop.
  Bus bus(BusOptions{.retention = 1});
  std::vector<PageId> pages;
  for (int i = 0; i < 42; ++i) pages.push_back(bus.create_page(kSpec).id);
  const PageId child = pages.back();
  for (std::size_t i = 0; i + 2 < pages.size(); ++i) {
    bus.depend(child, std::vector<PageId>{pages[i], pages[i + 1]}, sum(), {});
    bus.write(pages[i], 0, doubles({static_cast<double>(i + 1)}));
  }
  const std::uint64_t before = bus.memory().index_bytes;
  for (int i = 0; i < 2; ++i) {
    bus.write(pages[0], 8, doubles({1}));
    bus.checkpoint();
  }
  bus.gc();
  EXPECT_LT(bus.memory().index_bytes, before);
  const ProvenanceStep now = bus.provenance(child, bus.page(child).epoch.load(), 0).at(0);
  EXPECT_EQ(now.inputs.size(), 2u);
  EXPECT_EQ(now.inputs, (Inputs{{pages[39], 1}, {pages[40], 0}}));  // read after the drop (ASan: no freed list)
}

}  // namespace
}  // namespace mmsb
