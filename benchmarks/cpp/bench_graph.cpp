// The dependency graph on the validator's workload (DESIGN §5, #3): 10k pages and 40k edges of a
// random DAG (each edge from a lower to a higher random rank, ids unrelated to ranks).
//
//   BM_Validate          whole-graph validate(): Tarjan + dangling check + canonical order
//   BM_CanonicalOrder    recomputing the cached canonical order after an edge change
//   BM_AddEdges          building the graph edge by edge in random order (Pearce–Kelly reorders)
//   BM_RejectCycle       add_edge of cycle-closing edges (check + exception), graph unchanged
//   BM_FindCycle         the same check without the exception
//   BM_WavePushPop       one propagation wave over a 10k-node DAG with fan-in 2..4
//   BM_DependSinks       "depend 100k sinks": set_data_parents of a new sink into a 100k-node
//                        graph plus the position query its eager wave makes, per call
//   BM_BusDependEager    the same through Bus::depend in eager mode (copy kernel, in memory)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "mmsb/core/Error.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/graph/DepGraph.hpp"
#include "mmsb/graph/Wave.hpp"

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
    benchmark::DoNotOptimize(g.order_key(p));
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

// ---- depend of new sinks at 100k nodes ------------------------------------------------------

constexpr std::uint32_t kDependNodes = 100'000;

// How the new sink relates to the graph: `append` takes an id above every node (a page created
// after its parents: its canonical place is the end); `middle` an unused id between existing
// ones (the graph uses even ids, the new sinks odd ones), so it lands inside the order; `fresh`
// is `append` with one parent that is not in the graph yet (a raw page becoming a parent).
enum class SinkCase { Append = 0, Middle = 1, Fresh = 2 };
const char* sink_case_name(std::int64_t c) {
  return c == 0 ? "append" : c == 1 ? "middle" : "fresh parent";
}

// 100k nodes with ids 2, 4, ..., each (after the first 16) with two data parents among the
// earlier ones, linked without a query in between (the canonical order is built once, after).
void build_depend_graph(DepGraph& g, std::mt19937_64& rng) {
  for (std::uint32_t i = 16; i < kDependNodes; ++i) {
    const PageId a = 2 * (1 + rng() % i), b = 2 * (1 + rng() % i);
    const PageId parents[] = {a, b == a ? 2 * (1 + (a / 2) % i) : b};
    if (parents[0] == parents[1]) continue;
    g.set_data_parents(2 * (i + 1), parents);
  }
  (void)g.topological_order();
}

void BM_DependSinks(benchmark::State& state) {
  const auto how = static_cast<SinkCase>(state.range(0));
  std::mt19937_64 rng(kSeed + 2);
  DepGraph g;
  build_depend_graph(g, rng);
  const PageId top = 2 * (kDependNodes + 1);
  std::vector<PageId> odd(kDependNodes / 2);  // middle: unused odd ids in random order
  for (std::size_t i = 0; i < odd.size(); ++i) odd[i] = 2 * i + 1;
  std::shuffle(odd.begin(), odd.end(), rng);
  std::uint64_t k = 0;
  for (auto _ : state) {
    ++k;
    const PageId child = how == SinkCase::Middle ? odd[k % odd.size()] : top + 2 * k;
    const PageId a = 2 * (1 + rng() % kDependNodes);
    const PageId parents[] = {a, how == SinkCase::Fresh ? top + 2 * k + 1 : 2 * (1 + (a / 2) % kDependNodes)};
    g.set_data_parents(child, parents);
    benchmark::DoNotOptimize(g.order_key(child));
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["nodes"] = static_cast<double>(g.node_count());
  state.SetLabel(sink_case_name(state.range(0)));
}
BENCHMARK(BM_DependSinks)->Arg(0)->Arg(1)->Arg(2)->Iterations(2000)->Unit(benchmark::kMicrosecond);

// Bus::depend(child, on=[parent]) with mmsb.ops.copy in eager mode on a bus whose graph has 100k
// derived pages: the graph change, the wave that computes the child, the logged records.
void BM_BusDependEager(benchmark::State& state) {
  const bool fresh = state.range(0) == 2;
  constexpr std::uint32_t kSpare = 4096;
  mmsb::BusOptions o;
  o.threads = 1;
  mmsb::Bus bus(o);
  mmsb::PageSpec spec;
  spec.size = 8;
  spec.dtype = mmsb::DType::Float64;
  spec.shape = {1};
  std::vector<PageId> ids;
  for (std::uint32_t i = 0; i < kDependNodes + 2 * kSpare; ++i) ids.push_back(bus.create_page(spec).id);
  mmsb::RecomputeSpec copy;
  copy.kind = mmsb::RecomputeKind::Copy;
  std::mt19937_64 rng(kSeed + 3);
  bus.set_propagation(mmsb::PropagationMode::Deferred);  // built without a wave per depend
  for (std::uint32_t i = 16; i < kDependNodes; ++i) {
    const PageId parent[] = {ids[rng() % i]};
    bus.depend(ids[i], parent, copy, {});
  }
  bus.set_propagation(mmsb::PropagationMode::Eager);
  bus.propagate();
  std::uint32_t next = kDependNodes;
  for (auto _ : state) {
    if (next + 1 >= ids.size()) {
      state.SkipWithError("ran out of spare pages");
      break;
    }
    const PageId parent[] = {fresh ? ids[next + 1] : ids[rng() % kDependNodes]};
    bus.depend(ids[next], parent, copy, {});
    next += fresh ? 2 : 1;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(sink_case_name(state.range(0)));
}
BENCHMARK(BM_BusDependEager)->Arg(0)->Arg(2)->Iterations(2000)->Unit(benchmark::kMicrosecond);

}  // namespace
