// Propagation waves (DESIGN §1 Propagation) against oneTBB's flow graph and a plain topological
// loop doing the same 64-byte work per node.
//
// Pages are 64 bytes of float64 (8 elements). Each iteration is one user write (8 bytes: element 0
// of the root, or of every source) plus the whole eager wave it starts. The written value changes
// every iteration, so every recompute changes its page and no cutoff or memo skip happens.
//
//   Workloads
//     hop     root -> 1 copy page                                  (target <= 1 us per wave)
//     chain   root -> 10 copy pages in a line                      (target <= 5 us per wave)
//     dag     10,000 pages; the first 100 are sources, each later page i is reduce(sum_product)
//             of 2..4 distinct random pages < i. The write touches all 100 sources in one
//             DeltaBatch (Bus::apply_batch), so one wave recomputes all 9,900 derived pages
//             (target <= 2 ms per wave)
//   Implementations
//     Mmsb/*       mmsb::Bus (in memory, threads=1, eager): Bus::write / Bus::apply_batch
//     MmsbNoHistory/*  the same bus with history off (BusOptions::keep_history = false): no
//                  transaction record is encoded or kept; undo, provenance and the lsn index are.
//                  Its gap to Mmsb/* is what keeping the wave's record costs (encoding it, and
//                  the fresh memory history grows into: about 1.2 MB per dag wave)
//     Tbb/*        tbb::flow::graph, one continue_node per page (sources write the value, copy
//                  nodes memcpy 64 bytes, reduce nodes sum their parents' 8 doubles);
//                  try_put(continue_msg()) into the sources + wait_for_all() per iteration.
//                  Arg threads = tbb::global_control max_allowed_parallelism (1 = the caller only)
//     Plain/*      the floor: one sequential loop over the pages in topological order doing the
//                  same 64-byte kernel, parents from CSR arrays, nothing else
//     PlainDiff/*  the floor plus what change detection minimally costs: compute into a scratch
//                  page, compare with the old bytes, copy and bump an epoch if they differ
//     MmsbWriteOnly  Bus::write of 8 bytes to a page without dependents: the part of every Mmsb
//                  row that is not the wave
//     MmsbSchedule/* the scheduling of an mmsb wave alone (Wave::pop_batch and push_children by
//                  graph slot, as the bus does), no recompute: the per-node overhead to compare
//                  with Tbb's per node
//
// Counters: items_per_second = pages recomputed per second (Mmsb: from Bus::stats().recomputes
// deltas; the others: derived pages per wave); per_node = wall time per recomputed page;
// per_wave = wall time per iteration (write + wave). All rows use wall-clock time (UseRealTime):
// TBB's worker threads do part of the work.
//
// Fairness: Tbb and Plain do only the arithmetic. An mmsb wave also, per recomputed page: finds
// its derivation (hash map), gathers the parents' records and epochs and compares them with the
// memo, stages the old bytes in a scratch page, runs the kernel there, builds a Delta by diffing
// scratch against the page (cutoff detection), records undo state and encodes the delta into the
// wave's transaction (all or nothing if a recompute throws), applies the delta (epoch, lsn), and
// records its provenance (parents' epochs, per-page lsn index). The record goes to the in-memory
// log (history), not to a file, and no events are queued (no subscriber).
#include <benchmark/benchmark.h>

#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/global_control.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/graph/DepGraph.hpp"
#include "mmsb/graph/Wave.hpp"
#include "mmsb/graph/Recompute.hpp"

namespace {

using mmsb::PageId;

constexpr std::size_t kElems = 8;
constexpr std::size_t kPageBytes = kElems * sizeof(double);
constexpr std::size_t kChain = 10;
constexpr std::uint32_t kDagNodes = 10'000;
constexpr std::uint32_t kDagSources = 100;
constexpr std::uint64_t kSeed = 20'240'611;

// ---- workloads ---------------------------------------------------------------------------------

enum class Kernel { Copy, Sum };

// Nodes 0..sources-1 are sources; node i >= sources is computed from parents[offsets[i] ..
// offsets[i+1]) (all < i, so index order is a topological order).
struct Dag {
  std::uint32_t nodes = 0;
  std::uint32_t sources = 0;
  Kernel kernel = Kernel::Copy;
  std::vector<std::uint32_t> offsets;  // nodes + 1
  std::vector<std::uint32_t> parents;

  std::span<const std::uint32_t> parents_of(std::uint32_t i) const {
    return {parents.data() + offsets[i], offsets[i + 1] - offsets[i]};
  }
  std::uint32_t derived() const { return nodes - sources; }
};

// root -> `hops` copies in a line.
Dag chain(std::uint32_t hops) {
  Dag d;
  d.nodes = hops + 1;
  d.sources = 1;
  d.kernel = Kernel::Copy;
  d.offsets = {0, 0};
  for (std::uint32_t i = 1; i <= hops; ++i) {
    d.parents.push_back(i - 1);
    d.offsets.push_back(static_cast<std::uint32_t>(d.parents.size()));
  }
  return d;
}

// 10k nodes, fan-in 2..4 from distinct random earlier nodes, reduce(sum_product).
const Dag& random_dag() {
  static const Dag dag = [] {
    Dag d;
    d.nodes = kDagNodes;
    d.sources = kDagSources;
    d.kernel = Kernel::Sum;
    d.offsets.assign(kDagSources + 1, 0);
    std::mt19937_64 rng(kSeed);
    std::uniform_int_distribution<std::uint32_t> fan_in(2, 4);
    for (std::uint32_t i = kDagSources; i < kDagNodes; ++i) {
      const std::uint32_t k = fan_in(rng);
      std::uniform_int_distribution<std::uint32_t> earlier(0, i - 1);
      std::vector<std::uint32_t> ps;
      while (ps.size() < k) {
        const std::uint32_t p = earlier(rng);
        if (std::find(ps.begin(), ps.end(), p) == ps.end()) ps.push_back(p);
      }
      d.parents.insert(d.parents.end(), ps.begin(), ps.end());
      d.offsets.push_back(static_cast<std::uint32_t>(d.parents.size()));
    }
    return d;
  }();
  return dag;
}

const Dag& workload(std::int64_t which) {
  static const Dag hop = chain(1);
  static const Dag ten = chain(kChain);
  switch (which) {
    case 0: return hop;
    case 1: return ten;
    default: return random_dag();
  }
}

const char* workload_name(std::int64_t which) { return which == 0 ? "hop" : which == 1 ? "chain10" : "dag10k"; }

// ---- the shared 64-byte kernels ----------------------------------------------------------------

struct alignas(64) Page64 {
  double v[kElems];
};

inline void sum_into(double* out, std::span<const std::uint32_t> ps, const Page64* pages) {
  // The engine's order: out = p0, then += each further parent.
  std::memcpy(out, pages[ps[0]].v, kPageBytes);
  for (std::size_t k = 1; k < ps.size(); ++k) {
    const double* in = pages[ps[k]].v;
    for (std::size_t e = 0; e < kElems; ++e) out[e] += in[e];
  }
}

inline void compute(const Dag& d, std::uint32_t i, const Page64* pages, double* out) {
  const auto ps = d.parents_of(i);
  if (d.kernel == Kernel::Copy) {
    std::memcpy(out, pages[ps[0]].v, kPageBytes);
  } else {
    sum_into(out, ps, pages);
  }
}

// The expected pages after the sources' element 0 was set to `value` (everything else zero).
std::vector<Page64> expected_pages(const Dag& d, double value) {
  std::vector<Page64> pages(d.nodes, Page64{});
  for (std::uint32_t s = 0; s < d.sources; ++s) pages[s].v[0] = value;
  for (std::uint32_t i = d.sources; i < d.nodes; ++i) compute(d, i, pages.data(), pages[i].v);
  return pages;
}

void set_counters(benchmark::State& state, const Dag& d, std::uint64_t recomputes) {
  state.SetItemsProcessed(static_cast<std::int64_t>(recomputes));
  state.counters["per_node"] =
      benchmark::Counter(static_cast<double>(recomputes), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["per_wave"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["nodes"] = static_cast<double>(d.derived());
  state.SetLabel(workload_name(state.range(0)));
}

// ---- mmsb ---------------------------------------------------------------------------------------

mmsb::PageSpec page_spec() {
  mmsb::PageSpec spec;
  spec.size = kPageBytes;
  spec.dtype = mmsb::DType::Float64;
  spec.shape = {kElems};
  return spec;
}

// In memory, threads = 1 (BusOptions{} otherwise).
mmsb::BusOptions bus_options(bool history = true) {
  mmsb::BusOptions o;
  o.threads = 1;
  o.keep_history = history;
  return o;
}

struct MmsbGraph {
  mmsb::Bus bus;
  std::vector<PageId> ids;

  MmsbGraph(const Dag& d, bool history) : bus(bus_options(history)) {
    for (std::uint32_t i = 0; i < d.nodes; ++i) ids.push_back(bus.create_page(page_spec()).id);
    // Deferred while building: one wave at the end instead of one per depend().
    bus.set_propagation(mmsb::PropagationMode::Deferred);
    mmsb::RecomputeSpec fn;
    fn.kind = d.kernel == Kernel::Copy ? mmsb::RecomputeKind::Copy : mmsb::RecomputeKind::Reduce;
    fn.semiring = mmsb::SemiringKind::SumProduct;
    std::vector<PageId> parents;
    for (std::uint32_t i = d.sources; i < d.nodes; ++i) {
      parents.clear();
      for (std::uint32_t p : d.parents_of(i)) parents.push_back(ids[p]);
      bus.depend(ids[i], parents, fn, {});
    }
    bus.set_propagation(mmsb::PropagationMode::Eager);
    bus.propagate();
    if (!bus.stale_pages().empty()) throw std::logic_error("pages left stale after the initial wave");
  }

  bool matches(const Dag& d, double value) {
    const std::vector<Page64> want = expected_pages(d, value);
    Page64 got;
    for (std::uint32_t i = 0; i < d.nodes; ++i) {
      bus.snapshot(ids[i], std::as_writable_bytes(std::span(got.v)));
      if (std::memcmp(got.v, want[i].v, kPageBytes) != 0) return false;
    }
    return true;
  }
};

void mmsb_wave(benchmark::State& state, bool history) {
  const Dag& d = workload(state.range(0));
  MmsbGraph g(d, history);
  // One row per source: 8 bytes at offset 0 (the batch path for the DAG, Bus::write otherwise).
  std::vector<PageId> src_ids(g.ids.begin(), g.ids.begin() + d.sources);
  std::vector<std::uint64_t> offsets(d.sources, 0), lengths(d.sources, sizeof(double));
  std::vector<double> payload(d.sources, 0.0);
  const mmsb::DeltaBatchView batch{src_ids, offsets, lengths, std::as_bytes(std::span(payload))};
  const bool use_batch = d.sources > 1;

  double value = 0;
  const mmsb::BusStats before = g.bus.stats();  // the initial wave's cutoffs are not ours
  for (auto _ : state) {
    value += 1;
    if (use_batch) {
      std::fill(payload.begin(), payload.end(), value);
      g.bus.apply_batch(batch);
    } else {
      g.bus.write(src_ids[0], 0, std::as_bytes(std::span(&value, 1)));
    }
  }
  const mmsb::BusStats s = g.bus.stats();
  const std::uint64_t recomputes = s.recomputes - before.recomputes;
  const auto iterations = static_cast<std::uint64_t>(state.iterations());
  if (recomputes != iterations * d.derived() || s.derived_deltas - before.derived_deltas != recomputes ||
      s.waves - before.waves != iterations || s.cutoffs != before.cutoffs || s.memo_skips != before.memo_skips) {
    state.SkipWithError("wave did not recompute every derived page exactly once per iteration");
    return;
  }
  if (!g.matches(d, value)) {
    state.SkipWithError("pages differ from the plain loop's result");
    return;
  }
  set_counters(state, d, recomputes);
  state.counters["mem_MiB"] = static_cast<double>(g.bus.memory().total_bytes()) / (1 << 20);
}
void BM_MmsbWave(benchmark::State& state) { mmsb_wave(state, true); }
void BM_MmsbWaveNoHistory(benchmark::State& state) { mmsb_wave(state, false); }
BENCHMARK(BM_MmsbWave)->Name("Mmsb/wave")->ArgName("workload")->Arg(0)->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_MmsbWaveNoHistory)->Name("MmsbNoHistory/wave")->ArgName("workload")->Arg(0)->Arg(1)->Arg(2)->UseRealTime();

// The write alone (no dependents): subtract from the hop/chain rows to get the wave's share.
void BM_MmsbWriteOnly(benchmark::State& state) {
  mmsb::Bus bus{bus_options()};
  const PageId id = bus.create_page(page_spec()).id;
  double value = 0;
  for (auto _ : state) {
    value += 1;
    bus.write(id, 0, std::as_bytes(std::span(&value, 1)));
  }
  double got = 0;
  bus.read(id, 0, std::as_writable_bytes(std::span(&got, 1)));
  if (got != value) state.SkipWithError("write lost");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MmsbWriteOnly)->Name("MmsbWriteOnly")->UseRealTime();

// ---- the wave's scheduling alone ----------------------------------------------------------------

// What an mmsb wave spends on scheduling, without recomputes or commits: the sources' children
// pushed into a Wave, then pop_batch (bounded as the bus bounds it) and push_children by slot for
// every page popped, as Bus::visit_wave_locked does when every page changes. Per node, the
// overhead to hold against oneTBB's per-node cost on the same DAG.
void BM_MmsbSchedule(benchmark::State& state) {
  const Dag& d = workload(state.range(0));
  mmsb::DepGraph g;
  for (std::uint32_t i = d.sources; i < d.nodes; ++i) {
    for (std::uint32_t p : d.parents_of(i)) g.add_edge(PageId{p} + 1, PageId{i} + 1, mmsb::EdgeKind::Data);
  }
  (void)g.topological_order();  // built once per graph change, not per wave
  std::vector<mmsb::WaveNode> batch;
  const std::function<void(PageId)> on_control = [](PageId) {};
  std::uint64_t popped = 0;
  for (auto _ : state) {
    mmsb::Wave wave(g);
    for (std::uint32_t s = 0; s < d.sources; ++s) wave.push_children(PageId{s} + 1, on_control);
    for (wave.pop_batch(batch, mmsb::Bus::kWaveBatchPages); !batch.empty();
         wave.pop_batch(batch, mmsb::Bus::kWaveBatchPages)) {
      popped += batch.size();
      for (const mmsb::WaveNode& n : batch) wave.push_children(n, on_control);
    }
  }
  if (popped != static_cast<std::uint64_t>(state.iterations()) * d.derived()) {
    state.SkipWithError("the wave did not schedule every derived page exactly once");
    return;
  }
  set_counters(state, d, popped);
}
BENCHMARK(BM_MmsbSchedule)->Name("MmsbSchedule/wave")->ArgName("workload")->Arg(0)->Arg(1)->Arg(2)->UseRealTime();

// ---- oneTBB flow graph ---------------------------------------------------------------------------

void BM_TbbWave(benchmark::State& state) {
  namespace flow = oneapi::tbb::flow;
  const Dag& d = workload(state.range(0));
  const auto threads = static_cast<std::size_t>(state.range(1));
  oneapi::tbb::global_control limit(oneapi::tbb::global_control::max_allowed_parallelism, threads);

  std::vector<Page64> pages(d.nodes, Page64{});
  Page64* data = pages.data();
  double value = 0;
  flow::graph g;
  std::vector<std::unique_ptr<flow::continue_node<flow::continue_msg>>> nodes;
  nodes.reserve(d.nodes);
  for (std::uint32_t i = 0; i < d.nodes; ++i) {
    if (i < d.sources) {
      nodes.push_back(std::make_unique<flow::continue_node<flow::continue_msg>>(
          g, [data, i, &value](const flow::continue_msg&) { data[i].v[0] = value; }));
    } else {
      nodes.push_back(std::make_unique<flow::continue_node<flow::continue_msg>>(
          g, [data, i, &d](const flow::continue_msg&) { compute(d, i, data, data[i].v); }));
      for (std::uint32_t p : d.parents_of(i)) flow::make_edge(*nodes[p], *nodes[i]);
    }
  }
  for (auto _ : state) {
    value += 1;
    for (std::uint32_t s = 0; s < d.sources; ++s) nodes[s]->try_put(flow::continue_msg());
    g.wait_for_all();
  }
  const std::vector<Page64> want = expected_pages(d, value);
  for (std::uint32_t i = 0; i < d.nodes; ++i) {
    if (std::memcmp(pages[i].v, want[i].v, kPageBytes) != 0) {
      state.SkipWithError("pages differ from the plain loop's result");
      return;
    }
  }
  set_counters(state, d, state.iterations() * std::uint64_t{d.derived()});
}
BENCHMARK(BM_TbbWave)
    ->Name("Tbb/wave")
    ->ArgNames({"workload", "threads"})
    ->ArgsProduct({{0, 1, 2}, {1, 2}})
    ->UseRealTime();

// ---- the floor -----------------------------------------------------------------------------------

template <bool kDetectChange>
void BM_PlainWave(benchmark::State& state) {
  const Dag& d = workload(state.range(0));
  std::vector<Page64> pages(d.nodes, Page64{});
  std::vector<std::uint64_t> epochs(d.nodes, 0);
  Page64 scratch;
  Page64* data = pages.data();
  double value = 0;
  std::uint64_t changed = 0;
  for (auto _ : state) {
    value += 1;
    for (std::uint32_t s = 0; s < d.sources; ++s) {
      data[s].v[0] = value;
      ++epochs[s];
    }
    for (std::uint32_t i = d.sources; i < d.nodes; ++i) {
      if constexpr (kDetectChange) {
        compute(d, i, data, scratch.v);
        if (std::memcmp(scratch.v, data[i].v, kPageBytes) != 0) {
          std::memcpy(data[i].v, scratch.v, kPageBytes);
          ++epochs[i];
          ++changed;
        }
      } else {
        compute(d, i, data, data[i].v);
      }
    }
    benchmark::ClobberMemory();
  }
  const std::vector<Page64> want = expected_pages(d, value);
  for (std::uint32_t i = 0; i < d.nodes; ++i) {
    if (std::memcmp(pages[i].v, want[i].v, kPageBytes) != 0) {
      state.SkipWithError("pages differ from the reference");
      return;
    }
  }
  if (kDetectChange && changed != state.iterations() * std::uint64_t{d.derived()}) {
    state.SkipWithError("a recompute did not change its page");
    return;
  }
  set_counters(state, d, state.iterations() * std::uint64_t{d.derived()});
}
BENCHMARK(BM_PlainWave<false>)->Name("Plain/wave")->ArgName("workload")->Arg(0)->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_PlainWave<true>)->Name("PlainDiff/wave")->ArgName("workload")->Arg(0)->Arg(1)->Arg(2)->UseRealTime();

}  // namespace
