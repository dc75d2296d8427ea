// DepGraph by hand-built cases: edge bookkeeping, error codes and messages, set_data_parents,
// remove_node, the canonical order, validate(), memory accounting and the 100k-node chain.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
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

using test::expect_error;

constexpr EdgeKind kData = EdgeKind::Data;
constexpr EdgeKind kControl = EdgeKind::Control;

bool contains_text(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(EdgeKindTest, NamesRoundTrip) {
  for (EdgeKind k : {EdgeKind::Data, EdgeKind::Control, EdgeKind::DeviceSync}) {
    EXPECT_EQ(parse_edge_kind(edge_kind_name(k)), k);
  }
  EXPECT_EQ(edge_kind_name(EdgeKind::DeviceSync), "device_sync");
  const std::string msg = expect_error(ErrorCode::InvalidArgument, [] { parse_edge_kind("Data"); });
  EXPECT_TRUE(contains_text(msg, "data, control, device_sync")) << msg;
}

TEST(DepGraphTest, AddEdgeBookkeeping) {
  DepGraph g;
  EXPECT_EQ(g.node_count(), 0u);
  g.add_edge(1, 2, kData);
  g.add_edge(1, 3, kControl);
  g.add_edge(4, 3, EdgeKind::DeviceSync);
  EXPECT_EQ(g.node_count(), 4u);
  EXPECT_EQ(g.edge_count(), 3u);
  EXPECT_TRUE(g.contains(4));
  EXPECT_FALSE(g.contains(5));
  EXPECT_EQ(g.edge_kind(1, 3), kControl);
  EXPECT_EQ(g.edge_kind(3, 1), std::nullopt);
  EXPECT_EQ(g.children(1), (std::vector<PageId>{2, 3}));
  EXPECT_EQ(g.parents(3), (std::vector<PageId>{1, 4}));
  EXPECT_EQ(g.in_edges(3), (std::vector<Edge>{{1, 3, kControl}, {4, 3, EdgeKind::DeviceSync}}));
  EXPECT_EQ(g.out_edges(1), (std::vector<Edge>{{1, 2, kData}, {1, 3, kControl}}));
  EXPECT_TRUE(g.has_children(4));
  EXPECT_FALSE(g.has_children(2));
  std::vector<PageId> seen;
  g.for_each_child(1, [&](PageId c, EdgeKind) { seen.push_back(c); });
  EXPECT_EQ(seen, (std::vector<PageId>{2, 3}));
  EXPECT_TRUE(g.children(99).empty());
  EXPECT_TRUE(g.in_edges(99).empty());
}

TEST(DepGraphTest, RejectionsNameTheFaultAndChangeNothing) {
  DepGraph g;
  g.add_edge(3, 5, kData);
  g.add_edge(5, 7, kData);
  const auto before = g.edges();
  std::string msg = expect_error(ErrorCode::GraphCycle, [&] { g.add_edge(7, 3, kData); });
  EXPECT_TRUE(contains_text(msg, "adding edge 7 -> 3 would close the cycle 3 -> 5 -> 7 -> 3")) << msg;
  EXPECT_TRUE(contains_text(msg, "unchanged")) << msg;
  EXPECT_EQ(g.find_cycle(7, 3), (std::vector<PageId>{3, 5, 7}));
  EXPECT_TRUE(g.find_cycle(3, 7).empty());
  msg = expect_error(ErrorCode::GraphCycle, [&] { g.add_edge(4, 4, kData); });
  EXPECT_TRUE(contains_text(msg, "4 -> 4")) << msg;
  EXPECT_EQ(g.find_cycle(4, 4), (std::vector<PageId>{4}));
  msg = expect_error(ErrorCode::Graph, [&] { g.add_edge(3, 5, kControl); });
  EXPECT_TRUE(contains_text(msg, "an edge 3 -> 5 already exists (kind data)")) << msg;
  expect_error(ErrorCode::GraphCycle, [&] { g.add_edge(5, 3, kData); });  // the reverse edge
  expect_error(ErrorCode::InvalidArgument, [&] { g.add_edge(0, 3, kData); });
  expect_error(ErrorCode::InvalidArgument, [&] { g.add_edge(3, 0, kData); });
  EXPECT_EQ(g.edges(), before);
  EXPECT_FALSE(g.contains(4));
  EXPECT_EQ(g.node_count(), 3u);
}

TEST(DepGraphTest, RemoveEdgeDropsIsolatedNodes) {
  DepGraph g;
  g.add_edge(1, 2, kData);
  g.add_edge(2, 3, kData);
  EXPECT_FALSE(g.remove_edge(1, 3));
  EXPECT_FALSE(g.remove_edge(2, 1));
  EXPECT_TRUE(g.remove_edge(1, 2));
  EXPECT_FALSE(g.contains(1));
  EXPECT_TRUE(g.contains(2));
  EXPECT_EQ(g.order_key(1), std::nullopt);
  EXPECT_TRUE(g.remove_edge(2, 3));
  EXPECT_EQ(g.node_count(), 0u);
  EXPECT_TRUE(g.topological_order().empty());
  g.add_edge(3, 1, kData);  // recycled slots, reversed direction
  EXPECT_EQ(g.topological_order(), (std::vector<PageId>{3, 1}));
}

TEST(DepGraphTest, SetDataParentsReplacesOnlyDataEdges) {
  DepGraph g;
  g.add_edge(1, 2, kControl);
  g.add_edge(3, 2, kData);
  g.add_edge(4, 9, kData);
  g.add_edge(4, 2, kData);
  g.add_edge(2, 5, kData);
  g.set_data_parents(2, std::vector<PageId>{6, 4});
  EXPECT_EQ(g.parents(2), (std::vector<PageId>{1, 6, 4}));  // data parents in the order given
  EXPECT_EQ(g.in_edges(2), (std::vector<Edge>{{1, 2, kControl}, {4, 2, kData}, {6, 2, kData}}));  // by id
  EXPECT_FALSE(g.contains(3));                          // its only edge went
  EXPECT_EQ(g.children(4), (std::vector<PageId>{9, 2}));  // a kept edge keeps its place
  EXPECT_EQ(g.edge_count(), 5u);
  g.set_data_parents(2, {});
  EXPECT_EQ(g.in_edges(2), (std::vector<Edge>{{1, 2, kControl}}));
  EXPECT_FALSE(g.contains(6));
  g.set_data_parents(8, std::vector<PageId>{7});  // both new
  EXPECT_EQ(g.parents(8), (std::vector<PageId>{7}));
  g.set_data_parents(8, {});
  EXPECT_FALSE(g.contains(8));
  g.set_data_parents(42, {});  // nothing to do
  EXPECT_FALSE(g.contains(42));
}

TEST(DepGraphTest, SetDataParentsIsAllOrNothing) {
  DepGraph g;
  g.add_edge(1, 2, kControl);
  g.add_edge(3, 2, kData);
  g.add_edge(2, 5, kData);
  g.add_edge(5, 6, kData);
  const auto before = g.edges();
  const auto order = g.topological_order();
  std::string msg = expect_error(ErrorCode::GraphCycle, [&] { g.set_data_parents(2, std::vector<PageId>{7, 8, 6}); });
  EXPECT_TRUE(contains_text(msg, "edge 6 -> 2 would close the cycle 2 -> 5 -> 6 -> 2")) << msg;
  msg = expect_error(ErrorCode::Graph, [&] { g.set_data_parents(2, std::vector<PageId>{7, 3, 7}); });
  EXPECT_TRUE(contains_text(msg, "page 7 is listed twice")) << msg;
  msg = expect_error(ErrorCode::Graph, [&] { g.set_data_parents(2, std::vector<PageId>{7, 1}); });
  EXPECT_TRUE(contains_text(msg, "already a control parent of page 2")) << msg;
  expect_error(ErrorCode::GraphCycle, [&] { g.set_data_parents(2, std::vector<PageId>{7, 2}); });
  expect_error(ErrorCode::InvalidArgument, [&] { g.set_data_parents(2, std::vector<PageId>{7, 0}); });
  expect_error(ErrorCode::InvalidArgument, [&] { g.set_data_parents(0, std::vector<PageId>{7}); });
  EXPECT_EQ(g.edges(), before);
  EXPECT_EQ(g.topological_order(), order);
  EXPECT_FALSE(g.contains(7));
  EXPECT_FALSE(g.contains(8));
}

TEST(DepGraphTest, RemoveNodeTakesEveryEdge) {
  DepGraph g;
  g.add_edge(1, 5, kData);
  g.add_edge(2, 5, kData);
  g.add_edge(5, 3, kData);
  g.add_edge(5, 4, kControl);
  g.add_edge(2, 4, kData);
  g.remove_node(5);
  EXPECT_FALSE(g.contains(5));
  EXPECT_FALSE(g.contains(1));
  EXPECT_FALSE(g.contains(3));
  EXPECT_EQ(g.edges(), (std::vector<Edge>{{2, 4, kData}}));
  EXPECT_EQ(g.edge_count(), 1u);
  EXPECT_EQ(g.topological_order(), (std::vector<PageId>{2, 4}));
  g.remove_node(77);  // unknown: no-op
  EXPECT_EQ(g.node_count(), 2u);
}

TEST(DepGraphTest, CanonicalOrderIgnoresInsertionOrder) {
  std::mt19937_64 rng(7);
  std::vector<Edge> edges;
  auto scramble = [](PageId id) { return (id * 37) % 127 + 1; };  // ids unrelated to the DAG order
  for (PageId c = 2; c <= 120; ++c) {
    std::set<PageId> ps;
    for (int k = 0; k < 3; ++k) ps.insert(1 + rng() % (c - 1));
    for (PageId p : ps) edges.push_back({scramble(p), scramble(c), kData});
  }
  DepGraph a, b;
  for (const Edge& e : edges) a.add_edge(e.parent, e.child, e.kind);
  std::shuffle(edges.begin(), edges.end(), rng);
  for (const Edge& e : edges) b.add_edge(e.parent, e.child, e.kind);
  EXPECT_EQ(a.topological_order(), b.topological_order());
  // Replaying edges() rebuilds the same graph, in-edge order included.
  DepGraph c;
  for (const Edge& e : b.edges()) c.add_edge(e.parent, e.child, e.kind);
  EXPECT_EQ(c.edges(), b.edges());
  EXPECT_EQ(c.topological_order(), a.topological_order());
}

TEST(DepGraphTest, OrderKeysFollowTheCachedOrder) {
  DepGraph g;
  g.add_edge(9, 2, kData);
  g.add_edge(5, 2, kData);
  g.add_edge(2, 1, kData);
  EXPECT_EQ(g.topological_order(), (std::vector<PageId>{5, 9, 2, 1}));
  EXPECT_EQ(g.order_key(9), 1u);  // Kahn lays the order out on consecutive keys
  EXPECT_EQ(g.at_key(3), 1u);
  g.add_edge(1, 3, kData);  // a new sink goes after its parent
  EXPECT_EQ(g.topological_order(), (std::vector<PageId>{5, 9, 2, 1, 3}));
  EXPECT_EQ(g.at_key(*g.order_key(3)), 3u);
  EXPECT_GT(g.order_key(3), g.order_key(1));
  g.add_edge(4, 3, kData);  // a fresh parent with a smaller id than every other node but 3
  EXPECT_EQ(g.topological_order(), (std::vector<PageId>{4, 5, 9, 2, 1, 3}));
  EXPECT_LT(g.order_key(4), g.order_key(5));
  EXPECT_EQ(g.order_key(6), std::nullopt);
  expect_error(ErrorCode::InvalidArgument, [&] { g.at_key(g.key_bound()); });
}

// Sinks placed one at a time, into the middle of a 20k-node order as well as after it, and with
// fresh parents: the packed layout spreads windows and relays itself out, and every key stays in
// order (the randomized tests compare the order itself on smaller graphs).
TEST(DepGraphTest, ManySinksKeepTheirKeysInOrder) {
  constexpr PageId kBase = 20'000;
  DepGraph g;
  for (PageId i = 2; i <= kBase; ++i) g.add_edge(2 * (i / 2), 2 * i, kData);  // even ids only
  std::mt19937_64 rng(11);
  std::vector<PageId> added;
  for (int k = 0; k < 6000; ++k) {
    const PageId parent = 2 * (1 + rng() % kBase);
    PageId child = 0;
    switch (k % 3) {
      case 0: child = 2 * kBase + 1 + 2 * static_cast<PageId>(k); break;  // after every node
      case 1: child = 1 + 2 * (rng() % kBase); break;                        // between two nodes
      default: child = 4 * kBase + static_cast<PageId>(k); break;           // with a fresh parent below
    }
    if (g.contains(child)) continue;
    const PageId fresh = 8 * kBase + static_cast<PageId>(k);
    const std::vector<PageId> parents = k % 3 == 2 ? std::vector<PageId>{parent, fresh} : std::vector<PageId>{parent};
    g.set_data_parents(child, parents);
    added.push_back(child);
    ASSERT_TRUE(g.order_key(child).has_value());
    ASSERT_LT(g.order_key(parent), g.order_key(child));
  }
  const std::vector<PageId> order = g.topological_order();
  ASSERT_EQ(order.size(), g.node_count());
  EXPECT_LE(g.key_bound(), 4 * order.size() + 64);
  for (std::size_t i = 1; i < order.size(); ++i) ASSERT_LT(g.order_key(order[i - 1]), g.order_key(order[i]));
  for (const Edge& e : g.edges()) ASSERT_LT(g.order_key(e.parent), g.order_key(e.child));
  // Kahn from scratch (a copy of the edges) agrees with the order kept incrementally.
  DepGraph fresh;
  for (const Edge& e : g.edges()) fresh.add_edge(e.parent, e.child, e.kind);
  EXPECT_EQ(fresh.topological_order(), order);
  // Removing most of them leaves a compact layout.
  for (std::size_t i = 0; i < added.size(); i += 1) {
    if (i % 10 != 0) g.remove_node(added[i]);
  }
  EXPECT_LE(g.key_bound(), 4 * g.node_count() + 64);
  for (const Edge& e : g.edges()) ASSERT_LT(g.order_key(e.parent), g.order_key(e.child));
}

TEST(DepGraphTest, ValidateReportsDanglingEdgesInEdgeOrder) {
  DepGraph g;
  g.add_edge(1, 2, kData);
  g.add_edge(3, 2, kControl);
  g.add_edge(2, 4, kData);
  g.add_edge(3, 5, kData);
  GraphReport ok = g.validate([](PageId) { return true; });
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.nodes, 5u);
  EXPECT_EQ(ok.edges, 4u);
  EXPECT_TRUE(ok.cycles.empty());
  EXPECT_TRUE(ok.dangling.empty());
  EXPECT_EQ(ok.order, g.topological_order());
  EXPECT_TRUE(g.validate(nullptr).ok);  // no liveness oracle: every endpoint counts as live

  GraphReport bad = g.validate([](PageId id) { return id != 3 && id != 4; });
  EXPECT_FALSE(bad.ok);
  EXPECT_TRUE(bad.cycles.empty());
  EXPECT_EQ(bad.dangling, (std::vector<Edge>{{3, 2, kControl}, {2, 4, kData}, {3, 5, kData}}));
  EXPECT_EQ(bad.order, g.topological_order());
}

TEST(DepGraphTest, LongChainValidatesAndRejectsItsClosingEdge) {
  constexpr PageId kNodes = 100'001;
  DepGraph g;
  for (PageId i = 1; i < kNodes; ++i) g.add_edge(i, i + 1, kData);
  GraphReport r = g.validate([](PageId) { return true; });
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.nodes, kNodes);
  ASSERT_EQ(r.order.size(), kNodes);
  for (PageId i = 0; i < kNodes; ++i) ASSERT_EQ(r.order[i], i + 1);
  const std::string msg = expect_error(ErrorCode::GraphCycle, [&] { g.add_edge(kNodes, 1, kData); });
  EXPECT_TRUE(contains_text(msg, "more)")) << "a 100k-node cycle must be elided: " << msg.substr(0, 200);
  EXPECT_LT(msg.size(), 400u);
  EXPECT_EQ(g.find_cycle(kNodes, 1).size(), kNodes);
  EXPECT_EQ(g.edge_count(), kNodes - 1);

  // The same chain inserted from its far end (every parent fresh), and in random order (most
  // edges then go against the online order and force Pearce–Kelly reorders).
  DepGraph back;
  for (PageId i = kNodes - 1; i >= 1; --i) back.add_edge(i, i + 1, kData);
  EXPECT_EQ(back.topological_order(), r.order);
  std::vector<PageId> starts(20'000);
  std::iota(starts.begin(), starts.end(), PageId{1});
  std::shuffle(starts.begin(), starts.end(), std::mt19937_64(3));
  DepGraph shuffled;
  for (PageId i : starts) shuffled.add_edge(i, i + 1, kData);
  EXPECT_TRUE(shuffled.validate(nullptr).ok);
  const auto order = shuffled.topological_order();
  ASSERT_EQ(order.size(), starts.size() + 1);
  for (std::size_t i = 0; i < order.size(); ++i) ASSERT_EQ(order[i], i + 1);
  expect_error(ErrorCode::GraphCycle, [&] { shuffled.add_edge(20'001, 1, kData); });
}

TEST(DepGraphTest, MemoryIsAccountedAndClearReleasesIt) {
  DepGraph g;
  const std::uint64_t empty = g.memory_bytes();
  for (PageId i = 1; i <= 1000; ++i) g.add_edge(i, i + 1000, kData);
  (void)g.topological_order();
  const std::uint64_t full = g.memory_bytes();
  // At least the nodes, two adjacency entries per edge and a map entry per node.
  EXPECT_GT(full, empty + 2000 * (8 + 8) + 1000 * 16);
  g.clear();
  EXPECT_EQ(g.node_count(), 0u);
  EXPECT_EQ(g.edge_count(), 0u);
  EXPECT_LE(g.memory_bytes(), empty);
  g.add_edge(2, 1, kData);
  EXPECT_EQ(g.topological_order(), (std::vector<PageId>{2, 1}));
}

}  // namespace
}  // namespace mmsb
