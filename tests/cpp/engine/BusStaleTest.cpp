// Stale marks across recovery: random writes, batches, ticks, transactions and graph edits over
// data, control and device_sync edges, in eager and deferred mode, with propagate() and
// checkpoints. The oracle is the live bus itself: its stale pages and memos recorded at every
// lsn it reached. A reopened bus (checkpoint + log tail) and bus.at(lsn) (files, or the memory
// log) must report exactly those, and a bus may never change them without taking an lsn.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <vector>

#include "TestUtil.hpp"
#include "log/LogTestUtil.hpp"
#include "mmsb/core/Crc32c.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/log/LogFormat.hpp"

namespace mmsb {
namespace {

using test::uniform;

constexpr std::uint64_t kElems = 2;

PageSpec f64_page() { return PageSpec{kElems * 8, DType::Float64, {kElems}}; }

struct StaleState {
  std::vector<PageId> stale;
  std::map<PageId, std::vector<Epoch>> memos;  // every derived page
  bool operator==(const StaleState&) const = default;
};

StaleState stale_state(Bus& bus) {
  StaleState s;
  s.stale = bus.stale_pages();
  for (PageId id : bus.page_ids()) {
    if (auto d = bus.derivation(id)) s.memos[id] = d->memo;
  }
  return s;
}

::testing::AssertionResult same(const StaleState& want, const StaleState& got) {
  if (want.stale != got.stale) {
    auto out = ::testing::AssertionFailure() << "stale pages {";
    for (PageId id : got.stale) out << " " << id;
    out << " }, want {";
    for (PageId id : want.stale) out << " " << id;
    return out << " }";
  }
  if (want.memos != got.memos) {
    auto out = ::testing::AssertionFailure() << "memos differ:";
    for (const auto& [id, memo] : want.memos) {
      auto it = got.memos.find(id);
      if (it != got.memos.end() && it->second == memo) continue;
      out << " page " << id << " has {";
      if (it != got.memos.end()) {
        for (Epoch e : it->second) out << " " << e;
      }
      out << " }, want {";
      for (Epoch e : memo) out << " " << e;
      out << " };";
    }
    return out;
  }
  return ::testing::AssertionSuccess();
}

class StaleRun {
 public:
  StaleRun(std::uint64_t seed, std::string path) : rng_(seed), path_(std::move(path)) {
    open(false);
    for (int i = 0; i < 12; ++i) ids_.push_back(bus_->create_page(f64_page()).id);
    record();
  }

  // One random step; every error is one the bus must reject without a change.
  void step() {
    const auto what = uniform(rng_, 0, 99);
    try {
      if (what < 28) {
        write();
      } else if (what < 36) {
        batch();
      } else if (what < 46) {
        depend();
      } else if (what < 54) {
        add_edge(uniform(rng_, 0, 9) == 0 ? EdgeKind::DeviceSync : EdgeKind::Control);
      } else if (what < 61) {
        remove_edge();
      } else if (what < 69) {
        toggle_mode();
      } else if (what < 77) {
        bus_->propagate();
      } else if (what < 85) {
        transaction();
      } else if (what < 90) {
        tick();
      } else if (what < 95 && !path_.empty()) {
        bus_->checkpoint();
      } else if (what < 97 && !path_.empty()) {
        open(true);  // crash-free reopen: recovery from the newest checkpoint and the log
        ASSERT_TRUE(same(states_.at(bus_->lsn()), stale_state(*bus_))) << "reopened at lsn " << bus_->lsn();
      } else {
        write();
      }
    } catch (const Error& e) {
      ASSERT_TRUE(e.code() == ErrorCode::GraphCycle || e.code() == ErrorCode::Graph ||
                  e.code() == ErrorCode::InvalidArgument)
          << e.what();
      if (bus_->in_transaction()) bus_->rollback_transaction();
    }
    record();
  }

  // Every recorded lsn through bus.at(), then a reopen (directory buses).
  void check_history() {
    for (const auto& [lsn, want] : states_) {
      const std::shared_ptr<Bus> old = bus_->at(lsn);
      ASSERT_TRUE(same(want, stale_state(*old))) << "bus.at(" << lsn << ")";
    }
    if (path_.empty()) return;
    const Lsn last = bus_->lsn();
    open(true);
    ASSERT_EQ(bus_->lsn(), last);
    ASSERT_TRUE(same(states_.at(last), stale_state(*bus_))) << "reopened";
  }

  Bus& bus() { return *bus_; }
  std::size_t states() const { return states_.size(); }
  std::size_t stale_states() const {
    std::size_t n = 0;
    for (const auto& [lsn, s] : states_) n += !s.stale.empty();
    return n;
  }

 private:
  test::Rng rng_;
  std::string path_;
  std::unique_ptr<Bus> bus_;
  std::vector<PageId> ids_;
  std::map<Lsn, StaleState> states_;

  // The mode is not part of the log: set again after a reopen, as a program would.
  void open(bool existing) {
    const auto mode = bus_ ? bus_->propagation() : PropagationMode::Eager;
    if (bus_) bus_->close();
    bus_.reset();
    BusOptions o{1, path_};
    o.must_exist = existing;
    bus_ = std::make_unique<Bus>(std::move(o));
    bus_->set_propagation(mode);
  }

  // The stale set (and memos) is a function of the lsn: a step that took none changed neither.
  void record() {
    if (bus_->in_transaction()) return;
    const StaleState now = stale_state(*bus_);
    auto [it, fresh] = states_.emplace(bus_->lsn(), now);
    if (!fresh) {
      ASSERT_TRUE(same(it->second, now)) << "changed without an lsn at lsn " << bus_->lsn();
    }
  }

  PageId page() { return ids_[uniform(rng_, 0, ids_.size() - 1)]; }

  void write() {
    const double x = static_cast<double>(uniform(rng_, 0, 2));  // few values: cutoffs happen
    bus_->write(page(), 8 * uniform(rng_, 0, kElems - 1), {reinterpret_cast<const std::byte*>(&x), 8});
  }

  void batch() {
    DeltaBatch b;
    for (std::uint64_t k = uniform(rng_, 2, 4); k > 0; --k) {
      const double x = static_cast<double>(uniform(rng_, 0, 2));
      b.add(page(), 8 * uniform(rng_, 0, kElems - 1), {reinterpret_cast<const std::byte*>(&x), 8});
    }
    bus_->apply_batch(b.view());
  }

  void depend() {
    const PageId child = page();
    std::vector<PageId> parents{page()};
    if (uniform(rng_, 0, 1) == 0) parents.push_back(page());
    RecomputeSpec fn{RecomputeKind::Reduce, SemiringKind::MaxPlus, ""};
    if (parents.size() == 1 && uniform(rng_, 0, 1) == 0) fn = {RecomputeKind::Copy, SemiringKind::SumProduct, ""};
    if (uniform(rng_, 0, 2) == 0) fn.semiring = SemiringKind::MinPlus;
    bus_->depend(child, parents, fn, {});
  }

  void add_edge(EdgeKind kind) { bus_->add_edge(page(), page(), kind); }

  void remove_edge() {
    const std::vector<Edge> in = bus_->in_edges(page());
    if (in.empty()) return;
    const Edge e = in[uniform(rng_, 0, in.size() - 1)];
    bus_->remove_edge(e.parent, e.child);
  }

  void toggle_mode() {
    bus_->set_propagation(bus_->propagation() == PropagationMode::Eager ? PropagationMode::Deferred
                                                                         : PropagationMode::Eager);
  }

  // A few changes (and mode switches) as one record; sometimes rolled back instead.
  void transaction() {
    bus_->begin_transaction();
    for (std::uint64_t k = uniform(rng_, 2, 5); k > 0; --k) {
      switch (uniform(rng_, 0, 5)) {
        case 0: toggle_mode(); break;
        case 1: bus_->propagate(); break;
        case 2: depend(); break;
        case 3: add_edge(EdgeKind::Control); break;
        case 4: batch(); break;
        default: write(); break;
      }
    }
    if (uniform(rng_, 0, 4) == 0) {
      bus_->rollback_transaction();
    } else {
      bus_->commit_transaction();
    }
  }

  void tick() {
    for (std::uint64_t k = uniform(rng_, 0, 3); k > 0; --k) {
      const double x = static_cast<double>(uniform(rng_, 0, 2));
      bus_->submit(Delta::at(page(), 0, {reinterpret_cast<const std::byte*>(&x), 8}));
    }
    bus_->tick();
  }
};

// `steps` random steps, then every recorded lsn checked after reopen and time travel.
void run_and_check(StaleRun& run, int steps) {
  for (int i = 0; i < steps; ++i) {
    run.step();
    if (::testing::Test::HasFatalFailure()) return;
  }
  run.check_history();
  if (::testing::Test::HasFatalFailure()) return;
  // The run must have left pages stale often, or it proves little.
  EXPECT_GT(run.stale_states(), run.states() / 5);
}

TEST(BusStaleTest, ReopenAndTimeTravelReportTheLiveStaleSet) {
  for (std::uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE(seed);
    test::TempDir dir;
    StaleRun run(seed, dir.path());
    run_and_check(run, 300);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(BusStaleTest, InMemoryTimeTravelReportsTheLiveStaleSet) {
  for (std::uint64_t seed : {4, 5}) {
    SCOPED_TRACE(seed);
    StaleRun run(seed, "");
    run_and_check(run, 250);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// Control children stay stale (eager mode too) until propagate() acknowledges them, which takes
// an lsn when it changes nothing else; both survive a reopen.
TEST(BusStaleTest, ControlMarksAndTheirAcknowledgementSurviveReopen) {
  test::TempDir dir;
  PageId a = 0, b = 0, c = 0;
  Lsn marked = 0;
  {
    Bus bus(BusOptions{1, dir.path()});
    a = bus.create_page(f64_page()).id;
    b = bus.create_page(f64_page()).id;
    c = bus.create_page(f64_page()).id;
    bus.add_edge(a, b, EdgeKind::Control);
    bus.depend(c, std::vector<PageId>{a}, {RecomputeKind::Copy}, {});
    const double x = 5;
    bus.write(a, 0, {reinterpret_cast<const std::byte*>(&x), 8});
    EXPECT_EQ(bus.stale_pages(), std::vector<PageId>{b});
    marked = bus.lsn();
    bus.propagate();
    EXPECT_EQ(bus.lsn(), marked + 1);
    EXPECT_TRUE(bus.stale_pages().empty());
    bus.propagate();  // nothing left to acknowledge: no lsn
    EXPECT_EQ(bus.lsn(), marked + 1);
  }
  Bus reopened(BusOptions{1, dir.path()});
  EXPECT_TRUE(reopened.stale_pages().empty());
  EXPECT_EQ(reopened.lsn(), marked + 1);
  EXPECT_EQ(reopened.at(marked)->stale_pages(), std::vector<PageId>{b});
  reopened.checkpoint();
  const double y = 6;
  reopened.write(a, 0, {reinterpret_cast<const std::byte*>(&y), 8});
  reopened.checkpoint();  // the mark is in the checkpoint now, with no log after it
  reopened.close();
  Bus again(BusOptions{1, dir.path()});
  EXPECT_EQ(again.stale_pages(), std::vector<PageId>{b});
}

// The checkpoint as a version 3 build wrote it: the graph section without the `stale` page ids
// and the (empty) device_sync memo list that end it in version 4, every checksum made right.
test::Bytes as_version_three(test::Bytes file, std::uint64_t stale) {
  auto u64_at = [&](std::size_t at) {
    std::uint64_t v = 0;
    std::memcpy(&v, file.data() + at, 8);
    return v;
  };
  auto put_u32 = [&](std::size_t at, std::uint32_t v) { std::memcpy(file.data() + at, &v, 4); };
  std::size_t at = logfmt::kCheckpointHeaderBytes;
  for (std::uint64_t page = 0, pages = u64_at(32); page < pages; ++page) at += 16 + logfmt::padded(u64_at(at));
  const std::size_t end = at + 16 + u64_at(at);  // u64 S, S ids, u64 K = 0 end the section body
  const std::size_t cut = end - 8 - 8 * stale - 8;
  EXPECT_EQ(u64_at(end - 8), 0u);
  EXPECT_EQ(u64_at(cut), stale);
  file.resize(cut);
  const std::uint64_t body = cut - (at + 16);
  std::memcpy(file.data() + at, &body, 8);
  put_u32(at + 8, crc32c(file.data() + at + 16, body));
  file.resize(logfmt::padded(file.size()));
  file.insert(file.end(), reinterpret_cast<const std::byte*>(logfmt::kCheckpointEndMagic),
              reinterpret_cast<const std::byte*>(logfmt::kCheckpointEndMagic) + 8);
  put_u32(8, 3);
  put_u32(44, crc32c(file.data(), 44));
  file.resize(file.size() + 8, std::byte{0});
  put_u32(file.size() - 8, crc32c(file.data(), file.size() - 8));
  return file;
}

// A version 3 checkpoint holds no stale marks: it is still read, and recovery estimates them
// (a derived page that its recompute would change is stale; a control child's mark is lost).
TEST(BusStaleTest, VersionThreeCheckpointIsReadAndItsStalePagesEstimated) {
  test::TempDir dir;
  PageId a = 0, b = 0, c = 0;
  Lsn at = 0;
  {
    Bus bus(BusOptions{1, dir.path()});
    a = bus.create_page(f64_page()).id;
    b = bus.create_page(f64_page()).id;
    c = bus.create_page(f64_page()).id;
    bus.depend(b, std::vector<PageId>{a}, {RecomputeKind::Copy}, {});
    bus.add_edge(a, c, EdgeKind::Control);
    bus.set_propagation(PropagationMode::Deferred);
    const double x = 7;
    bus.write(a, 0, {reinterpret_cast<const std::byte*>(&x), 8});
    EXPECT_EQ(bus.stale_pages(), (std::vector<PageId>{b, c}));
    at = bus.checkpoint();
  }
  const std::string ckpt = test::checkpoint_files(dir.path()).at(0);
  test::write_file(ckpt, as_version_three(test::read_file(ckpt), 2));
  Bus bus(BusOptions{1, dir.path()});
  EXPECT_EQ(bus.recovery().checkpoint_lsn, at) << "the version 3 checkpoint was not used";
  EXPECT_EQ(bus.stale_pages(), std::vector<PageId>{b});
  EXPECT_EQ(bus.propagate(), 1u);
  EXPECT_TRUE(bus.stale_pages().empty());
}

// Version 6 changed what a wave visits; a version 5 segment replays by the rules it was written
// under. Here a page left stale by deferred mode, whose recompute would change nothing, and an
// unrelated eager write: version 6 leaves the page stale (the write's wave does not reach it),
// version 5 swept every stale page into each wave (a cutoff there: no Derived op, same bytes).
TEST(BusStaleTest, AVersionFiveSegmentReplaysItsWavesAsTheyRan) {
  test::TempDir dir;
  PageId y = 0;
  {
    Bus bus(BusOptions{1, dir.path()});
    const PageId a = bus.create_page(f64_page()).id;
    y = bus.create_page(f64_page()).id;
    const PageId x = bus.create_page(f64_page()).id;
    const PageId z = bus.create_page(f64_page()).id;
    bus.depend(y, std::vector<PageId>{a}, {RecomputeKind::Copy}, {});
    bus.depend(z, std::vector<PageId>{x}, {RecomputeKind::Copy}, {});
    bus.set_propagation(PropagationMode::Deferred);
    const double zero = 0, one = 1;
    bus.write(a, 0, {reinterpret_cast<const std::byte*>(&zero), 8});  // y stale, unchanged
    bus.set_propagation(PropagationMode::Eager);
    bus.write(x, 0, {reinterpret_cast<const std::byte*>(&one), 8});
    EXPECT_EQ(bus.stale_pages(), std::vector<PageId>{y});
  }
  {
    Bus bus(BusOptions{1, dir.path()});
    EXPECT_EQ(bus.stale_pages(), std::vector<PageId>{y}) << "version 6 replay";
    EXPECT_EQ(bus.derivation(y)->memo, std::vector<Epoch>{0}) << "a's epoch when y was computed";
  }
  const std::vector<std::string> segments = test::segment_files(dir.path());
  ASSERT_EQ(segments.size(), 1u);
  test::Bytes file = test::read_file(segments[0]);
  const test::Bytes v5 = logfmt::encode_segment_header({1, 5});
  std::copy(v5.begin(), v5.end(), file.begin());
  test::write_file(segments[0], file);
  Bus bus(BusOptions{1, dir.path()});
  EXPECT_TRUE(bus.stale_pages().empty()) << "version 5 replay: its eager wave recomputed y";
  EXPECT_EQ(bus.derivation(y)->memo, std::vector<Epoch>{1}) << "a's epoch after its zero write";
}

}  // namespace
}  // namespace mmsb
