// Wave scheduling over random DAGs with diamonds and fan-in (each affected node exactly once, in
// canonical order), and Tarjan on hand-built and random cyclic graphs that DepGraph never holds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "GraphReference.hpp"
#include "TestUtil.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/graph/DepGraph.hpp"
#include "mmsb/graph/Wave.hpp"
#include "mmsb/graph/Tarjan.hpp"

namespace mmsb {
namespace {

using test::uniform;
using Adjacency = std::vector<std::vector<std::uint32_t>>;

// A random DAG on `n` nodes with scrambled ids: node k takes 2..4 parents among lower ranks.
void build_fan_in_dag(DepGraph& g, test::RefGraph& ref, test::Rng& rng, std::uint32_t n) {
  std::vector<PageId> id(n);
  std::iota(id.begin(), id.end(), PageId{1});
  std::shuffle(id.begin(), id.end(), rng);
  for (std::uint32_t k = 1; k < n; ++k) {
    std::set<std::uint32_t> ps;
    const auto fan_in = std::min<std::uint64_t>(k, uniform(rng, 2, 4));
    while (ps.size() < fan_in) ps.insert(static_cast<std::uint32_t>(uniform(rng, 0, k - 1)));
    for (std::uint32_t p : ps) {
      g.add_edge(id[p], id[k], EdgeKind::Data);
      ref.add(id[p], id[k], EdgeKind::Data);
    }
  }
}

TEST(WaveTest, PopsEachAffectedNodeOnceInCanonicalOrder) {
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    test::Rng rng(seed);
    DepGraph g;
    test::RefGraph ref;
    const auto n = static_cast<std::uint32_t>(uniform(rng, 20, 700));
    build_fan_in_dag(g, ref, rng, n);
    std::vector<PageId> seeds;
    for (std::uint64_t i = 0, k = uniform(rng, 1, 5); i < k; ++i) seeds.push_back(uniform(rng, 1, n));
    // Expected: seeds and their descendants, each once, by canonical order key.
    std::vector<PageId> expected;
    for (PageId v = 1; v <= n; ++v) {
      if (std::any_of(seeds.begin(), seeds.end(), [&](PageId s) { return ref.reaches(s, v); })) expected.push_back(v);
    }
    std::sort(expected.begin(), expected.end(), [&](PageId a, PageId b) { return *g.order_key(a) < *g.order_key(b); });

    Wave wave(g);
    EXPECT_TRUE(wave.empty());
    for (PageId s : seeds) wave.push(s);
    std::vector<PageId> popped;
    for (PageId v = wave.pop(); v != 0; v = wave.pop()) {
      popped.push_back(v);
      g.for_each_child(v, [&](PageId c, EdgeKind) { wave.push(c); });  // fan-in pushes repeat
    }
    EXPECT_TRUE(wave.empty());
    EXPECT_EQ(wave.pop(), 0u);
    ASSERT_EQ(popped, expected) << "seed " << seed;
  }
}

// pop_batch is pop() in groups: with the same cutoff decisions (a node pushes its children or
// not), the batches concatenate to exactly the one-at-a-time sequence, no node of a batch
// reaches another, and a full batch ends without losing the next node.
TEST(WaveTest, BatchesConcatenateToThePopSequenceAndAreIndependent) {
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    test::Rng rng(seed);
    DepGraph g;
    test::RefGraph ref;
    const auto n = static_cast<std::uint32_t>(uniform(rng, 20, 500));
    build_fan_in_dag(g, ref, rng, n);
    std::vector<PageId> seeds;
    for (std::uint64_t i = 0, k = uniform(rng, 1, 40); i < k; ++i) seeds.push_back(uniform(rng, 1, n));
    std::vector<bool> changes(n + 1);
    for (auto&& c : changes) c = uniform(rng, 0, 3) != 0;  // a quarter cut off
    const std::uint64_t cap = uniform(rng, 1, 50);

    std::vector<PageId> serial;
    Wave one(g);
    for (PageId s : seeds) one.push(s);
    for (PageId v = one.pop(); v != 0; v = one.pop()) {
      serial.push_back(v);
      if (changes[v]) g.for_each_child(v, [&](PageId c, EdgeKind) { one.push(c); });
    }

    std::vector<PageId> batched;
    std::vector<WaveNode> batch;
    Wave many(g);
    for (PageId s : seeds) many.push(s);
    std::size_t batches = 0, widest = 0;
    for (;;) {
      many.pop_batch(batch, cap);
      if (batch.empty()) break;
      ++batches;
      widest = std::max(widest, batch.size());
      ASSERT_LE(batch.size(), cap);
      for (WaveNode a : batch) {
        for (WaveNode b : batch) {
          ASSERT_TRUE(a.id == b.id || !ref.reaches(a.id, b.id))
              << a.id << " reaches " << b.id << " in one batch, seed " << seed;
        }
      }
      for (WaveNode v : batch) {
        batched.push_back(v.id);
        if (changes[v.id]) many.push_children(v, [](PageId) {});
      }
    }
    ASSERT_EQ(batched, serial) << "seed " << seed;
    EXPECT_TRUE(cap == 1 || serial.size() < 2 || widest > 1) << "never batched anything, seed " << seed;
    EXPECT_LE(batches, serial.size());
  }
}

// Waves that visit most of a 3,000-node graph have the graph's child keys built part way and
// read children from them; between waves edges come and go (control edges too), which must
// invalidate them. Every wave's batches still concatenate to the one-at-a-time sequence, no
// batch holds a node reaching another, and control children are notified, not scheduled.
TEST(WaveTest, LargeWavesMatchTheSerialSequenceThroughGraphEdits) {
  test::Rng rng(77);
  DepGraph g;
  test::RefGraph ref;
  const std::uint32_t n = 3000;
  build_fan_in_dag(g, ref, rng, n);
  std::vector<std::pair<PageId, PageId>> added;
  const auto topo = g.topological_order();
  std::map<PageId, std::size_t> rank;
  for (std::size_t i = 0; i < topo.size(); ++i) rank[topo[i]] = i;
  PageId next_id = n + 1;
  for (int round = 0; round < 10; ++round) {
    // One kind of edit a round, so that each must invalidate the keys on its own: edges between
    // earlier and later nodes of the first order (a control edge now and then; these re-run
    // Kahn), fresh sinks (placed one by one: the order's keys stay), removals of added edges.
    const int edit = round == 0 ? -1 : round % 3;
    for (int k = 0; k < 20 && edit == 0; ++k) {
      const PageId a = uniform(rng, 1, n), b = uniform(rng, 1, n);
      if (a == b || g.edge_kind(a, b) || g.edge_kind(b, a)) continue;
      const auto [p, c] = rank[a] < rank[b] ? std::pair{a, b} : std::pair{b, a};
      const EdgeKind kind = uniform(rng, 0, 3) == 0 ? EdgeKind::Control : EdgeKind::Data;
      g.add_edge(p, c, kind);
      ref.add(p, c, kind);
      added.emplace_back(p, c);
    }
    for (int k = 0; k < 10 && edit == 1; ++k) {
      const PageId sink = next_id++;
      rank[sink] = rank.size();
      for (std::uint64_t j = 0, parents = uniform(rng, 1, 3); j < parents; ++j) {
        const PageId p = uniform(rng, 1, n);
        if (g.edge_kind(p, sink)) continue;
        g.add_edge(p, sink, EdgeKind::Data);
        ref.add(p, sink, EdgeKind::Data);
        added.emplace_back(p, sink);
      }
    }
    for (int k = 0; k < 8 && edit == 2 && !added.empty(); ++k) {
      const std::size_t i = uniform(rng, 0, added.size() - 1);
      ASSERT_TRUE(g.remove_edge(added[i].first, added[i].second));
      ref.remove(added[i].first, added[i].second);
      added.erase(added.begin() + static_cast<std::ptrdiff_t>(i));
    }
    std::vector<PageId> seeds;
    for (int i = 0; i < 200; ++i) seeds.push_back(uniform(rng, 1, n));
    std::vector<bool> changes(next_id);
    for (auto&& c : changes) c = uniform(rng, 0, 9) != 0;

    std::vector<PageId> serial;
    std::vector<std::pair<PageId, PageId>> serial_notified;
    Wave one(g);
    for (PageId s : seeds) one.push(s);
    for (PageId v = one.pop(); v != 0; v = one.pop()) {
      serial.push_back(v);
      if (!changes[v]) continue;
      g.for_each_child(v, [&](PageId c, EdgeKind kind) {
        if (kind == EdgeKind::Control) {
          serial_notified.emplace_back(v, c);
        } else {
          one.push(c);
        }
      });
    }
    std::sort(serial_notified.begin(), serial_notified.end());
    ASSERT_GT(serial.size(), 1500u) << "round " << round << ": too small a wave to build child keys";

    std::vector<PageId> batched;
    std::vector<std::pair<PageId, PageId>> notified;
    std::vector<WaveNode> batch;
    Wave many(g);
    for (PageId s : seeds) many.push(s);
    for (many.pop_batch(batch, 4096); !batch.empty(); many.pop_batch(batch, 4096)) {
      // Keys grow along every edge, so children all past the batch's last key mean no path
      // from one of its nodes to another.
      const std::uint32_t last = *g.order_key(batch.back().id);
      for (WaveNode a : batch) {
        g.for_each_child(a.id, [&](PageId c, EdgeKind) { ASSERT_GT(*g.order_key(c), last) << "round " << round; });
      }
      for (WaveNode v : batch) {
        batched.push_back(v.id);
        if (changes[v.id]) many.push_children(v, [&](PageId c) { notified.emplace_back(v.id, c); });
      }
    }
    std::sort(notified.begin(), notified.end());
    ASSERT_EQ(batched, serial) << "round " << round;
    ASSERT_EQ(notified, serial_notified) << "round " << round;
  }
}

// The child keys stay current while the graph does not change; each mutator that leaves the
// canonical order valid (a sink's edges changed) must still invalidate them. A 2,000-node line
// with a sink s hanging off two of its nodes: after a first wave has had the keys built, s is
// moved off node 1000 in two ways or removed, and a wave from node 900 must no longer reach it.
TEST(WaveTest, ChildKeysFollowSinkEdgeChanges) {
  const auto visit = [](const DepGraph& g, PageId seed) {
    std::vector<PageId> seen;
    std::vector<WaveNode> batch;
    Wave wave(g);
    wave.push(seed);
    for (wave.pop_batch(batch, 4096); !batch.empty(); wave.pop_batch(batch, 4096)) {
      for (WaveNode v : batch) {
        seen.push_back(v.id);
        wave.push_children(v, [](PageId) {});
      }
    }
    return seen;
  };
  const PageId line = 2000, s = 5000, other = 6000;
  for (int how = 0; how < 3; ++how) {
    DepGraph g;
    for (PageId v = 1; v < line; ++v) g.add_edge(v, v + 1, EdgeKind::Data);
    g.add_edge(1, s, EdgeKind::Data);
    g.add_edge(1000, s, EdgeKind::Data);
    ASSERT_EQ(visit(g, 1).size(), line + 1);  // builds the keys part way
    ASSERT_EQ(visit(g, 900).back(), s);       // reads them throughout
    if (how == 0) {
      ASSERT_TRUE(g.remove_edge(1000, s));
    } else if (how == 1) {
      const PageId parents[] = {1, other};
      g.set_data_parents(s, parents);
    } else {
      g.remove_node(s);
    }
    const std::vector<PageId> seen = visit(g, 900);
    EXPECT_EQ(std::count(seen.begin(), seen.end(), s), 0) << "edit " << how;
    EXPECT_EQ(seen.size(), line - 899) << "edit " << how;
  }
}

TEST(WaveTest, DiamondAndMisuse) {
  DepGraph g;
  g.add_edge(10, 20, EdgeKind::Data);
  g.add_edge(10, 30, EdgeKind::Data);
  g.add_edge(20, 40, EdgeKind::Data);
  g.add_edge(30, 40, EdgeKind::Data);
  Wave wave(g);
  wave.push(40);
  wave.push(10);
  wave.push(40);  // ignored
  EXPECT_EQ(wave.pop(), 10u);
  wave.push(30);
  wave.push(20);
  EXPECT_EQ(wave.pop(), 20u);
  EXPECT_EQ(wave.pop(), 30u);
  test::expect_error(ErrorCode::Internal, [&] { wave.push(20); });  // already behind the wave
  EXPECT_EQ(wave.pop(), 40u);
  EXPECT_EQ(wave.pop(), 0u);
  test::expect_error(ErrorCode::Graph, [&] { wave.push(99); });
}

// Tarjan's contract, checked on any graph: components partition the nodes, two nodes share a
// component exactly when each reaches the other, and every edge between components points to
// an earlier-listed one.
void check_components(const Adjacency& adj, const Adjacency& comps) {
  const std::size_t n = adj.size();
  std::vector<std::set<std::uint32_t>> reach(n);
  for (std::uint32_t s = 0; s < n; ++s) {
    std::vector<std::uint32_t> todo{s};
    reach[s].insert(s);
    while (!todo.empty()) {
      const auto v = todo.back();
      todo.pop_back();
      for (auto w : adj[v]) if (reach[s].insert(w).second) todo.push_back(w);
    }
  }
  std::vector<std::size_t> comp_of(n, SIZE_MAX);
  for (std::size_t i = 0; i < comps.size(); ++i) {
    ASSERT_TRUE(std::is_sorted(comps[i].begin(), comps[i].end()));
    for (auto v : comps[i]) {
      ASSERT_EQ(comp_of[v], SIZE_MAX) << "node " << v << " in two components";
      comp_of[v] = i;
    }
  }
  for (std::uint32_t a = 0; a < n; ++a) {
    ASSERT_NE(comp_of[a], SIZE_MAX) << "node " << a << " in no component";
    for (std::uint32_t b = 0; b < n; ++b) {
      const bool mutual = reach[a].contains(b) && reach[b].contains(a);
      ASSERT_EQ(comp_of[a] == comp_of[b], mutual) << a << " vs " << b;
    }
    for (auto w : adj[a]) ASSERT_LE(comp_of[w], comp_of[a]) << "edge " << a << " -> " << w;
  }
}

std::vector<std::uint32_t> csr_offsets(const Adjacency& adj, std::vector<std::uint32_t>& targets) {
  std::vector<std::uint32_t> offsets{0};
  for (const auto& out : adj) {
    targets.insert(targets.end(), out.begin(), out.end());
    offsets.push_back(static_cast<std::uint32_t>(targets.size()));
  }
  return offsets;
}

TEST(TarjanTest, FindsHandBuiltCycles) {
  // 0 -> 1 -> 2 -> 0 feeds 3 <-> 4; 5 loops on itself; 6 stands alone; 7 -> 0.
  const Adjacency adj = {{1}, {2}, {0, 3}, {4}, {3}, {5}, {}, {0}};
  const Adjacency comps = strongly_connected_components(adj);
  check_components(adj, comps);
  const std::set<std::vector<std::uint32_t>> got(comps.begin(), comps.end());
  EXPECT_EQ(got, (std::set<std::vector<std::uint32_t>>{{0, 1, 2}, {3, 4}, {5}, {6}, {7}}));
  std::vector<std::uint32_t> targets;
  const auto offsets = csr_offsets(adj, targets);
  const Adjacency cyclic = cyclic_components(offsets, targets);
  EXPECT_EQ(cyclic, (Adjacency{{3, 4}, {0, 1, 2}, {5}}));  // sinks first
  EXPECT_TRUE(strongly_connected_components({}).empty());
  test::expect_error(ErrorCode::InvalidArgument, [] { strongly_connected_components({{1}}); });
}

TEST(TarjanTest, RandomGraphsMatchMutualReachability) {
  for (std::uint64_t seed = 1; seed <= 30; ++seed) {
    test::Rng rng(seed);
    const auto n = static_cast<std::uint32_t>(uniform(rng, 1, 60));
    Adjacency adj(n);
    for (std::uint64_t e = 0, m = uniform(rng, 0, 2 * n); e < m; ++e) {
      adj[uniform(rng, 0, n - 1)].push_back(static_cast<std::uint32_t>(uniform(rng, 0, n - 1)));
    }
    const Adjacency comps = strongly_connected_components(adj);
    check_components(adj, comps);
    std::vector<std::uint32_t> targets;
    const auto offsets = csr_offsets(adj, targets);
    Adjacency expected;
    for (const auto& c : comps) {
      const bool loop = std::find(adj[c[0]].begin(), adj[c[0]].end(), c[0]) != adj[c[0]].end();
      if (c.size() > 1 || loop) expected.push_back(c);
    }
    EXPECT_EQ(cyclic_components(offsets, targets), expected) << "seed " << seed;
  }
}

TEST(TarjanTest, HundredThousandNodeCycleNeedsNoRecursion) {
  constexpr std::uint32_t kNodes = 100'000;
  Adjacency adj(kNodes);
  for (std::uint32_t v = 0; v < kNodes; ++v) adj[v].push_back((v + 1) % kNodes);
  const Adjacency comps = strongly_connected_components(adj);
  ASSERT_EQ(comps.size(), 1u);
  EXPECT_EQ(comps[0].size(), kNodes);
  adj[kNodes - 1].clear();  // now a chain: 100k singleton components, sink first
  const Adjacency chain = strongly_connected_components(adj);
  ASSERT_EQ(chain.size(), kNodes);
  EXPECT_EQ(chain.front(), (std::vector<std::uint32_t>{kNodes - 1}));
  EXPECT_EQ(chain.back(), (std::vector<std::uint32_t>{0}));
}

}  // namespace
}  // namespace mmsb
