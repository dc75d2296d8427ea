// DepGraph against the naive reference (GraphReference.hpp) over long random sequences of edge
// inserts, removals, set_data_parents and node removals: every cycle-closing edge is rejected and
// leaves the graph as it was, every safe one is accepted, and the canonical order is the
// lexicographically smallest topological order at every check.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "GraphReference.hpp"
#include "TestUtil.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/graph/DepGraph.hpp"

namespace mmsb {
namespace {

using test::RefGraph;
using test::uniform;

struct Counts {
  int accepted = 0, cycles = 0, duplicates = 0, removed = 0, set_ok = 0, set_rejected = 0;
};

EdgeKind random_kind(test::Rng& rng) {
  const auto r = uniform(rng, 0, 9);
  return r < 6 ? EdgeKind::Data : r < 9 ? EdgeKind::Control : EdgeKind::DeviceSync;
}

// Full comparison of the orders: canonical == brute-force smallest, order keys increasing along
// it with at_key their inverse and 0 in every gap, every edge forward, the key range compact.
void check_order(const DepGraph& g, const RefGraph& ref) {
  const std::vector<PageId> order = g.topological_order();
  ASSERT_EQ(order, ref.smallest_topological_order());
  std::optional<std::uint32_t> prev;
  for (PageId id : order) {
    const auto key = g.order_key(id);
    ASSERT_TRUE(key.has_value());
    if (prev) {
      ASSERT_GT(*key, *prev);
    }
    ASSERT_EQ(g.at_key(*key), id);
    prev = key;
  }
  std::size_t held = 0;
  for (std::uint32_t k = 0; k < g.key_bound(); ++k) held += g.at_key(k) != 0;
  ASSERT_EQ(held, order.size());
  ASSERT_LE(g.key_bound(), 4 * order.size() + 64);
  for (const Edge& e : g.edges()) ASSERT_LT(*g.order_key(e.parent), *g.order_key(e.child));
  const GraphReport r = g.validate([](PageId) { return true; });
  ASSERT_TRUE(r.ok);
  ASSERT_EQ(r.order, order);
}

// The path of a rejected edge p -> c must run c -> ... -> p along existing edges.
void check_cycle_path(const RefGraph& ref, PageId p, PageId c, const std::vector<PageId>& path) {
  ASSERT_FALSE(path.empty());
  ASSERT_EQ(path.front(), c);
  ASSERT_EQ(path.back(), p);
  for (std::size_t i = 0; i + 1 < path.size(); ++i) ASSERT_TRUE(ref.kind(path[i], path[i + 1]).has_value());
}

void try_add(DepGraph& g, RefGraph& ref, test::Rng& rng, PageId p, PageId c, Counts& n) {
  const EdgeKind kind = random_kind(rng);
  const auto before = g.edges();
  if (p == c || ref.reaches(c, p)) {
    test::expect_error(ErrorCode::GraphCycle, [&] { g.add_edge(p, c, kind); });
    check_cycle_path(ref, p, c, g.find_cycle(p, c));
    ASSERT_EQ(g.edges(), before);
    ++n.cycles;
  } else if (ref.kind(p, c)) {
    test::expect_error(ErrorCode::Graph, [&] { g.add_edge(p, c, kind); });
    ASSERT_EQ(g.edges(), before);
    ++n.duplicates;
  } else {
    ASSERT_TRUE(g.find_cycle(p, c).empty());
    g.add_edge(p, c, kind);
    ref.add(p, c, kind);
    ++n.accepted;
  }
}

void try_set_parents(DepGraph& g, RefGraph& ref, test::Rng& rng, PageId child, PageId nodes, Counts& n) {
  std::vector<PageId> parents;
  const auto k = uniform(rng, 0, 4);
  for (std::uint64_t i = 0; i < k; ++i) parents.push_back(uniform(rng, 1, nodes));
  // The checks in the documented order: duplicates, then each parent in turn.
  std::optional<ErrorCode> expected;
  if (std::set<PageId>(parents.begin(), parents.end()).size() != parents.size()) expected = ErrorCode::Graph;
  for (PageId p : parents) {
    if (expected) break;
    const auto kind = ref.kind(p, child);
    if (p == child) expected = ErrorCode::GraphCycle;
    else if (kind && *kind != EdgeKind::Data) expected = ErrorCode::Graph;
    else if (ref.reaches(child, p)) expected = ErrorCode::GraphCycle;
  }
  const auto before = g.edges();
  if (expected) {
    test::expect_error(*expected, [&] { g.set_data_parents(child, parents); });
    ASSERT_EQ(g.edges(), before);
    ++n.set_rejected;
  } else {
    g.set_data_parents(child, parents);
    ref.set_data_parents(child, parents);
    ++n.set_ok;
  }
}

Counts run_random(std::uint64_t seed, PageId nodes, int ops, int order_every) {
  test::Rng rng(seed);
  DepGraph g;
  RefGraph ref;
  Counts n;
  for (int op = 0; op < ops; ++op) {
    const auto what = uniform(rng, 0, 99);
    const PageId a = uniform(rng, 1, nodes), b = uniform(rng, 1, nodes);
    if (what < 55) {
      try_add(g, ref, rng, a, b, n);
    } else if (what < 85) {
      const auto all = ref.edges();
      if (!all.empty()) {
        const Edge e = all[uniform(rng, 0, all.size() - 1)];
        EXPECT_TRUE(g.remove_edge(e.parent, e.child));
        ref.remove(e.parent, e.child);
        ++n.removed;
      }
      EXPECT_EQ(g.remove_edge(a, b), ref.kind(a, b).has_value());
      if (ref.kind(a, b)) ref.remove(a, b);
    } else if (what < 97) {
      try_set_parents(g, ref, rng, a, nodes, n);
    } else {
      g.remove_node(a);
      ref.remove_node(a);
    }
    if (::testing::Test::HasFatalFailure()) return n;
    EXPECT_EQ(g.edges(), ref.edges()) << "after op " << op;
    EXPECT_EQ(g.edge_count(), ref.edge_count());
    EXPECT_EQ(g.node_count(), ref.nodes().size());
    EXPECT_EQ(g.out_edges(a), ref.out_edges(a));
    if (::testing::Test::HasFailure()) return n;
    if (op % order_every == 0) {
      check_order(g, ref);
      if (::testing::Test::HasFatalFailure()) return n;
    }
  }
  check_order(g, ref);
  return n;
}

// The depend() pattern at a larger size: mostly new sinks (ids spread over the whole range, so
// they land inside the order as well as after it, some with a fresh parent), sinks re-parented,
// their edges removed, sinks deleted, and now and then an edge anywhere (which may invalidate the
// cached order). Every op is followed by a query, as an eager wave makes one, so the next op
// starts from a valid cached order and keeps it by placing nodes; the full comparison with the
// reference runs every `check_every` ops.
Counts run_sink_heavy(std::uint64_t seed, PageId ids, int ops, int check_every) {
  test::Rng rng(seed);
  DepGraph g;
  RefGraph ref;
  Counts n;
  std::vector<PageId> nodes;  // ref.nodes() as of the start of the op
  auto random_node = [&] { return nodes[uniform(rng, 0, nodes.size() - 1)]; };
  auto random_sink = [&]() -> PageId {
    for (int tries = 0; tries < 20; ++tries) {
      const PageId v = random_node();
      if (ref.out_edges(v).empty()) return v;
    }
    return 0;
  };
  for (PageId i = 2; i <= 64; ++i) {
    g.add_edge(i / 2, i, EdgeKind::Data);
    ref.add(i / 2, i, EdgeKind::Data);
  }
  for (int op = 0; op < ops; ++op) {
    const std::set<PageId> node_set = ref.nodes();
    nodes.assign(node_set.begin(), node_set.end());
    const auto what = uniform(rng, 0, 99);
    PageId touched = random_node();
    if (what < 45) {  // a new sink: one to three parents, sometimes one of them fresh
      const PageId child = uniform(rng, 1, ids);
      if (!node_set.contains(child)) {
        std::vector<PageId> parents;
        for (std::uint64_t k = uniform(rng, 1, 3); k > 0; --k) {
          const PageId p = uniform(rng, 0, 4) == 0 ? uniform(rng, 1, ids) : random_node();
          if (p != child && std::find(parents.begin(), parents.end(), p) == parents.end()) parents.push_back(p);
        }
        g.set_data_parents(child, parents);
        ref.set_data_parents(child, parents);
        ++n.set_ok;
        touched = child;
      }
    } else if (what < 60) {  // a sink re-parented (or left without data parents)
      if (const PageId child = random_sink()) {
        try_set_parents(g, ref, rng, child, ids, n);
        touched = child;
      }
    } else if (what < 75) {  // an edge into a sink removed
      if (const PageId child = random_sink()) {
        const auto in = ref.edges();
        for (const Edge& e : in) {
          if (e.child != child) continue;
          EXPECT_TRUE(g.remove_edge(e.parent, e.child));
          ref.remove(e.parent, e.child);
          ++n.removed;
          break;
        }
      }
    } else if (what < 85) {  // a sink deleted
      if (const PageId v = random_sink()) {
        g.remove_node(v);
        ref.remove_node(v);
      }
    } else {  // an edge anywhere, from a node or a fresh page
      const PageId p = uniform(rng, 0, 1) == 0 ? random_node() : uniform(rng, 1, ids);
      try_add(g, ref, rng, p, random_node(), n);
    }
    if (::testing::Test::HasFatalFailure()) return n;
    for (const Edge& e : g.in_edges(touched)) {
      EXPECT_LT(*g.order_key(e.parent), *g.order_key(e.child)) << "after op " << op;
    }
    if (::testing::Test::HasFailure()) return n;
    if (op % check_every == 0) {
      EXPECT_EQ(g.edges(), ref.edges()) << "after op " << op;
      check_order(g, ref);
      if (::testing::Test::HasFatalFailure()) return n;
    }
  }
  check_order(g, ref);
  return n;
}

TEST(DepGraphRandomTest, SinkHeavyMatchesReference) {
  for (std::uint64_t seed : {21, 22, 23}) {
    SCOPED_TRACE(seed);
    const Counts n = run_sink_heavy(seed, 3000, 3000 / test::kSanitizerScale, 100);
    EXPECT_GT(n.set_ok, 800 / test::kSanitizerScale);
    EXPECT_GT(n.removed, 150 / test::kSanitizerScale);
    if (::testing::Test::HasFailure()) return;
  }
}

struct RandomCase {
  std::uint64_t seed;
  PageId nodes;
  int ops;
  int order_every;
};

class DepGraphRandomTest : public ::testing::TestWithParam<RandomCase> {};

TEST_P(DepGraphRandomTest, MatchesReference) {
  const RandomCase c = GetParam();
  const Counts n = run_random(c.seed, c.nodes, c.ops, c.order_every);
  // The sequence must exercise both outcomes heavily, or it proves little.
  EXPECT_GT(n.accepted, c.ops / 10);
  EXPECT_GT(n.cycles, c.ops / 50);
  EXPECT_GT(n.removed, c.ops / 10);
  EXPECT_GT(n.set_ok, c.ops / 100);
  EXPECT_GT(n.set_rejected, c.ops / 200);
  RecordProperty("accepted", n.accepted);
  RecordProperty("cycles_rejected", n.cycles);
}

INSTANTIATE_TEST_SUITE_P(Sizes, DepGraphRandomTest,
                         ::testing::Values(RandomCase{1, 8, 4000, 1}, RandomCase{2, 50, 6000, 5},
                                           RandomCase{3, 50, 6000, 5}, RandomCase{4, 120, 5000, 10},
                                           RandomCase{5, 200, 5000, 25}, RandomCase{6, 40, 6000, 1}),
                         [](const ::testing::TestParamInfo<RandomCase>& param_info) {
                           return "seed" + std::to_string(param_info.param.seed) + "_nodes" +
                                  std::to_string(param_info.param.nodes);
                         });

}  // namespace
}  // namespace mmsb
