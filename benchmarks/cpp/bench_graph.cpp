// The dependency graph on the validator's workload (DESIGN §5, #3): 10k pages and 40k edges of a
// random DAG (each edge from a lower to a higher random rank, ids unrelated to ranks).
//
//   BM_Validate          whole-graph validate(): Tarjan + dangling check + canonical order
//   BM_CanonicalOrder    recomputing the cached canonical order after an edge change
//   BM_AddEdges          building the graph edge by edge in random order (Pearce–Kelly reorders)
//   BM_RejectCycle       add_edge of cycle-closing edges (check + exception), graph unchanged
//   BM_FindCycle         the same check without the exception
//   BM_WavePushPop       one propagation wave over a 10k-node DAG with fan-in 2..4
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/graph/DepGraph.hpp"

namespace {

using mmsb::DepGraph;
using mmsb::EdgeKind;
using mmsb::PageId;

constexpr std::uint32_t kNodes = 10'000;
constexpr std::size_t kEdges = 40'000;
constexpr std::uint64_t kSeed = 20'240'611;

struct Workload {
  std::vector<PageId> id_of_rank;                   // rank -> page id (a random permutation)
  std::vector<std::pair<PageId, PageId>> edges;     // parent -> child, random order
  std::vector<std::pair<PageId, PageId>> closing;   // edges that would close a cycle
};

// Random DAG: distinct rank pairs (lo, hi), edge id[lo] -> id[hi]. Cycle-closing candidates are
// reversed edges of random paths, so some are short and some span many ranks.
const Workload& workload() {
  static const Workload w = [] {
    Workload out;
    std::mt19937_64 rng(kSeed);
    out.id_of_rank.resize(kNodes);
    std::iota(out.id_of_rank.begin(), out.id_of_rank.end(), PageId{1});
    std::shuffle(out.id_of_rank.begin(), out.id_of_rank.end(), rng);
    std::uniform_int_distribution<std::uint32_t> rank(0, kNodes - 1);
    std::set<std::pair<std::uint32_t, std::uint32_t>> seen;
    std::vector<std::vector<std::uint32_t>> out_ranks(kNodes);
    while (seen.size() < kEdges) {
      std::uint32_t a = rank(rng), b = rank(rng);
      if (a == b) continue;
      if (a > b) std::swap(a, b);
      if (!seen.insert({a, b}).second) continue;
      out.edges.emplace_back(out.id_of_rank[a], out.id_of_rank[b]);
      out_ranks[a].push_back(b);
    }
    for (int i = 0; out.closing.size() < 1000 && i < 100'000; ++i) {
      std::uint32_t start = rank(rng), v = start;
      for (int step = 0; step < 1 + i % 12 && !out_ranks[v].empty(); ++step) {
        v = out_ranks[v][rng() % out_ranks[v].size()];
      }
      if (v != start) out.closing.emplace_back(out.id_of_rank[v], out.id_of_rank[start]);
    }
    return out;
  }();
  return w;
}

void build(DepGraph& g) {
  for (const auto& [p, c] : workload().edges) g.add_edge(p, c, EdgeKind::Data);
}

void BM_Validate(benchmark::State& state) {
  DepGraph g;
  build(g);
  for (auto _ : state) {
    g.remove_edge(workload().edges[0].first, workload().edges[0].second);  // drop the cached order
    g.add_edge(workload().edges[0].first, workload().edges[0].second, EdgeKind::Data);
    mmsb::GraphReport r = g.validate([](PageId id) { return id != 0; });
    if (!r.ok || r.order.size() != g.node_count()) state.SkipWithError("validate failed");
    benchmark::DoNotOptimize(r);
  }
  state.counters["nodes"] = static_cast<double>(g.node_count());
  state.counters["edges"] = static_cast<double>(g.edge_count());
}
BENCHMARK(BM_Validate)->Unit(benchmark::kMillisecond);

void BM_CanonicalOrder(benchmark::State& state) {
  DepGraph g;
  build(g);
  const auto [p, c] = workload().edges[0];
  for (auto _ : state) {
    g.remove_edge(p, c);
    g.add_edge(p, c, EdgeKind::Data);
    benchmark::DoNotOptimize(g.position(p));
  }
}
BENCHMARK(BM_CanonicalOrder)->Unit(benchmark::kMillisecond);

void BM_AddEdges(benchmark::State& state) {
  for (auto _ : state) {
    DepGraph g;
    build(g);
    benchmark::DoNotOptimize(g.edge_count());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kEdges));
}
BENCHMARK(BM_AddEdges)->Unit(benchmark::kMillisecond);

void BM_RejectCycle(benchmark::State& state) {
  DepGraph g;
  build(g);
  const auto& closing = workload().closing;
  std::size_t i = 0, rejected = 0;
  for (auto _ : state) {
    const auto [p, c] = closing[i++ % closing.size()];
    try {
      g.add_edge(p, c, EdgeKind::Data);
    } catch (const mmsb::Error&) {
      ++rejected;
    }
  }
  if (rejected != static_cast<std::size_t>(state.iterations())) {
    state.SkipWithError("a cycle-closing edge was accepted");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_RejectCycle)->Unit(benchmark::kMicrosecond);

void BM_FindCycle(benchmark::State& state) {
  DepGraph g;
  build(g);
  const auto& closing = workload().closing;
  std::size_t i = 0, length = 0;
  for (auto _ : state) {
    const auto [p, c] = closing[i++ % closing.size()];
    length += g.find_cycle(p, c).size();
  }
  state.counters["avg_path"] = static_cast<double>(length) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_FindCycle)->Unit(benchmark::kMicrosecond);

// A wave from every root (in-degree 0) over a DAG where node k has 2..4 parents of lower rank:
// every node is popped once, and pushed once per in-edge (fan-in repeats are ignored).
void BM_WavePushPop(benchmark::State& state) {
  std::mt19937_64 rng(kSeed + 1);
  DepGraph g;
  std::vector<PageId> roots;
  for (std::uint32_t k = 0; k < kNodes; ++k) {
    const PageId child = workload().id_of_rank[k];
    if (k < 4) roots.push_back(child);
    std::set<std::uint32_t> ps;
    while (k >= 4 && ps.size() < 2 + rng() % 3) ps.insert(static_cast<std::uint32_t>(rng() % k));
    for (std::uint32_t p : ps) g.add_edge(workload().id_of_rank[p], child, EdgeKind::Data);
  }
  (void)g.topological_order();  // the cached order is built once per graph change, not per wave
  std::size_t popped = 0;
  for (auto _ : state) {
    mmsb::Wave wave(g);
    for (PageId r : roots) wave.push(r);
    while (const PageId v = wave.pop()) {
      ++popped;
      g.for_each_child(v, [&](PageId c, EdgeKind) { wave.push(c); });
    }
  }
  if (popped != static_cast<std::size_t>(state.iterations()) * kNodes) state.SkipWithError("the wave missed nodes");
  state.SetItemsProcessed(static_cast<std::int64_t>(popped));
  state.counters["edges"] = static_cast<double>(g.edge_count());
}
BENCHMARK(BM_WavePushPop)->Unit(benchmark::kMicrosecond);

}  // namespace
