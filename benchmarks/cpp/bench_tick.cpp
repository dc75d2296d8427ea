// The tick, memory and GC validators' workloads (DESIGN §1 "Ingest queue and tick", "Memory and
// GC"; §5 validators 6 'tick' and 7 'memory') as Google Benchmark rows.
//
//   Tick/validator   10,000 source pages of 512 float64 (4 KiB) and 1,000 derived pages, each a
//                    reduce of 4 distinct random sources (even derived pages sum_product, odd ones
//                    min_plus; no weights). Per iteration, outside the timing, 100,000 deltas of
//                    one float64 at a random (source page, element) are submitted: as 100
//                    DeltaBatch submissions of 1,000 rows (submit=0) or as 100,000 single
//                    Delta::at submissions (submit=1). Timed (manual time): bus.tick() alone.
//                    Arg history: BusOptions::keep_history (1 = the default).
//                    Three warm-up ticks run first; the bus has BusOptions' default threads.
//                    Target: tick p99 <= 16 ms (aim 5 ms).
//   Memory/create    1,000,000 pages of `page_bytes` on an in-memory bus (history off/on; raw or
//                    typed=1: float32 with a shape, so each page also has cold info).
//                    One iteration; its time is the creation of all pages. Reports memory() by kind
//                    and the process RSS growth (/proc/self/statm): right after the creation (fresh
//                    arena slabs are not resident yet) and after touching every page's bytes.
//                    Target: total <= 1 GiB of data + 64 MiB of overhead (metadata <= 64 B/page).
//   Gc/pause         1,000,000 pages of 1 KiB (history off; raw, float32 in pattern 3). Per iteration 1% of the live
//                    pages (10,000) are deleted and as many created (untimed), then gc() is timed.
//                    pattern=0: random victims, delete + create, then gc (freed blocks are reused
//                    by the creates, so no slab is wholly free at gc time);
//                    pattern=1: the 10,000 oldest live pages (contiguous ids and addresses),
//                    delete, gc, then create (whole slabs are free at gc time: arena trimming);
//                    pattern=2: the oldest pages, delete + create, then gc;
//                    pattern=3: as 0 over float32 pages (each with cold info: dtype, shape).
//                    Target: GC pause (GcReport::pause_ns) p99 < 3 ms (aim < 1 ms).
//
// Quantiles are nearest-rank over this run's own per-iteration samples (not the bus's
// LatencyHistogram, which is bucketed to 12.5%). Counters ending in _ms / _us / _MiB are in those
// units; the row's Time column is the mean of the timed part (manual time).
#include <benchmark/benchmark.h>

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "mmsb/delta/Delta.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/graph/Recompute.hpp"

namespace {

using mmsb::PageId;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kSeed = 20'240'611;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Nearest-rank quantile of `v` (sorted in place).
double quantile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size(), std::max<std::size_t>(rank, 1)) - 1];
}

double mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

// p50, p99 and max of `v` as counters `<name>_p50<unit>` etc.
void report_quantiles(benchmark::State& state, const std::string& name, std::vector<double> v, const char* unit) {
  state.counters[name + "_p50" + unit] = quantile(v, 0.50);
  state.counters[name + "_p99" + unit] = quantile(v, 0.99);
  state.counters[name + "_max" + unit] = v.empty() ? 0 : v.back();  // sorted by quantile()
}

constexpr double kMiB = 1024.0 * 1024.0;

// Resident set size of this process in bytes (/proc/self/statm, second field).
std::uint64_t rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long long size = 0, resident = 0;
  const int n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

// ---- Tick/validator ------------------------------------------------------------------------------

constexpr std::uint32_t kSources = 10'000;
constexpr std::uint32_t kDerived = 1'000;
constexpr std::uint32_t kFanIn = 4;
constexpr std::uint64_t kElems = 512;  // float64: 4 KiB pages
constexpr std::uint64_t kPageBytes = kElems * sizeof(double);
constexpr std::size_t kDeltasPerTick = 100'000;
constexpr std::size_t kBatchRows = 1'000;
constexpr int kWarmupTicks = 3;

mmsb::PageSpec float_page() {
  mmsb::PageSpec spec;
  spec.size = kPageBytes;
  spec.dtype = mmsb::DType::Float64;
  spec.shape = {kElems};
  return spec;
}

struct TickGraph {
  std::unique_ptr<mmsb::Bus> bus;
  std::vector<PageId> sources;
  std::vector<PageId> derived;
  std::vector<std::vector<PageId>> parents;  // per derived page
  std::vector<mmsb::SemiringKind> semiring;  // per derived page

  TickGraph(bool keep_history, std::size_t queue_capacity) {
    mmsb::BusOptions o;
    o.keep_history = keep_history;
    o.queue_capacity = queue_capacity;
    bus = std::make_unique<mmsb::Bus>(o);
    for (std::uint32_t i = 0; i < kSources; ++i) sources.push_back(bus->create_page(float_page()).id);
    for (std::uint32_t i = 0; i < kDerived; ++i) derived.push_back(bus->create_page(float_page()).id);
    // Deferred while building: one wave at the end instead of one per depend().
    bus->set_propagation(mmsb::PropagationMode::Deferred);
    std::mt19937_64 rng(kSeed);
    std::uniform_int_distribution<std::uint32_t> pick(0, kSources - 1);
    for (std::uint32_t i = 0; i < kDerived; ++i) {
      std::vector<PageId> ps;
      while (ps.size() < kFanIn) {
        const PageId p = sources[pick(rng)];
        if (std::find(ps.begin(), ps.end(), p) == ps.end()) ps.push_back(p);
      }
      mmsb::RecomputeSpec fn;
      fn.kind = mmsb::RecomputeKind::Reduce;
      fn.semiring = i % 2 == 0 ? mmsb::SemiringKind::SumProduct : mmsb::SemiringKind::MinPlus;
      bus->depend(derived[i], ps, fn, {});
      parents.push_back(std::move(ps));
      semiring.push_back(fn.semiring);
    }
    bus->set_propagation(mmsb::PropagationMode::Eager);
    bus->propagate();
  }

  // Every derived page equals the reduce of its parents (sum in parent order; min), exactly.
  bool consistent() {
    std::vector<double> in(kElems), want(kElems), got(kElems);
    for (std::uint32_t i = 0; i < kDerived; ++i) {
      for (std::size_t k = 0; k < parents[i].size(); ++k) {
        bus->snapshot(parents[i][k], std::as_writable_bytes(std::span(in)));
        for (std::uint64_t e = 0; e < kElems; ++e) {
          if (k == 0) {
            want[e] = in[e];
          } else if (semiring[i] == mmsb::SemiringKind::SumProduct) {
            want[e] += in[e];
          } else {
            want[e] = std::min(want[e], in[e]);
          }
        }
      }
      bus->snapshot(derived[i], std::as_writable_bytes(std::span(got)));
      for (std::uint64_t e = 0; e < kElems; ++e) {
        const double tol = 1e-12 * std::max(1.0, std::fabs(want[e]));
        if (!(std::fabs(got[e] - want[e]) <= tol)) return false;
      }
    }
    return true;
  }
};

// Draws one tick's deltas: (page, element offset, value) at random over the sources.
struct DeltaGen {
  std::mt19937_64 rng{kSeed + 1};
  std::uniform_int_distribution<std::uint32_t> page{0, kSources - 1};
  std::uniform_int_distribution<std::uint64_t> elem{0, kElems - 1};
  std::uniform_real_distribution<double> value{-1000.0, 1000.0};
};

void BM_Tick(benchmark::State& state) {
  const bool keep_history = state.range(0) != 0;
  const bool singles = state.range(1) != 0;
  // Singles: 100k submissions must fit the ring (a full ring blocks a lone submitter forever).
  TickGraph g(keep_history, singles ? (std::size_t{1} << 17) : (std::size_t{1} << 16));
  DeltaGen gen;
  mmsb::DeltaBatch batch;
  batch.reserve(kBatchRows, kBatchRows * sizeof(double));

  auto submit_tick = [&] {
    for (std::size_t b = 0; b < kDeltasPerTick / kBatchRows; ++b) {
      batch.clear();
      for (std::size_t r = 0; r < kBatchRows; ++r) {
        const PageId p = g.sources[gen.page(gen.rng)];
        const std::uint64_t off = gen.elem(gen.rng) * sizeof(double);
        const double v = gen.value(gen.rng);
        if (singles) {
          g.bus->submit(mmsb::Delta::at(p, off, std::as_bytes(std::span(&v, 1))));
        } else {
          batch.add(p, off, std::as_bytes(std::span(&v, 1)));
        }
      }
      if (!singles) g.bus->submit(batch.view());
    }
  };
  auto check = [&](const mmsb::TickReport& rep) -> bool {
    if (rep.deltas_applied != kDeltasPerTick || rep.rejected != 0) {
      state.SkipWithError(("tick applied " + std::to_string(rep.deltas_applied) + " deltas, rejected " +
                           std::to_string(rep.rejected) + (rep.rejections.empty() ? "" : ": " + rep.rejections[0]))
                              .c_str());
      return false;
    }
    return true;
  };

  for (int w = 0; w < kWarmupTicks; ++w) {
    submit_tick();
    if (!check(g.bus->tick())) return;
  }
  g.bus->reset_stats();  // tick_latency() without the warm-up ticks

  std::vector<double> tick_ms, submit_ms, internal_ms, drain_ms, apply_ms, propagate_ms, recomputes, derived;
  for (auto _ : state) {
    const Clock::time_point s0 = Clock::now();
    submit_tick();
    submit_ms.push_back(seconds_since(s0) * 1e3);
    const Clock::time_point t0 = Clock::now();
    const mmsb::TickReport rep = g.bus->tick();
    const double t = seconds_since(t0);
    state.SetIterationTime(t);
    if (!check(rep)) return;
    tick_ms.push_back(t * 1e3);
    internal_ms.push_back(static_cast<double>(rep.total_ns) * 1e-6);
    drain_ms.push_back(static_cast<double>(rep.phase_ns[static_cast<int>(mmsb::TickPhase::Drain)]) * 1e-6);
    apply_ms.push_back(static_cast<double>(rep.phase_ns[static_cast<int>(mmsb::TickPhase::Apply)]) * 1e-6);
    propagate_ms.push_back(static_cast<double>(rep.phase_ns[static_cast<int>(mmsb::TickPhase::Propagate)]) * 1e-6);
    recomputes.push_back(static_cast<double>(rep.recomputes));
    derived.push_back(static_cast<double>(rep.derived_deltas));
  }
  if (!g.consistent()) {
    state.SkipWithError("a derived page differs from the reduce of its parents");
    return;
  }
  report_quantiles(state, "tick", tick_ms, "_ms");
  state.counters["tick_mean_ms"] = mean(tick_ms);
  report_quantiles(state, "report_total", internal_ms, "_ms");  // TickReport::total_ns
  state.counters["drain_mean_ms"] = mean(drain_ms);
  state.counters["apply_mean_ms"] = mean(apply_ms);
  state.counters["propagate_mean_ms"] = mean(propagate_ms);
  report_quantiles(state, "apply", apply_ms, "_ms");
  report_quantiles(state, "propagate", propagate_ms, "_ms");
  state.counters["recomputes_per_tick"] = mean(recomputes);
  state.counters["derived_deltas_per_tick"] = mean(derived);
  state.counters["submit_mean_ms"] = mean(submit_ms);  // untimed: the 100k submissions
  state.counters["hist_p99_ms"] = static_cast<double>(g.bus->tick_latency().quantile_ns(0.99)) * 1e-6;
  state.counters["mem_MiB"] = static_cast<double>(g.bus->memory().total_bytes()) / kMiB;
  state.counters["p99_le_16ms"] = quantile(tick_ms, 0.99) <= 16.0 ? 1 : 0;
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kDeltasPerTick));
  state.SetLabel(std::string(keep_history ? "history" : "no-history") + (singles ? ", 100k Delta::at" : ", 100 x 1k batch"));
}
BENCHMARK(BM_Tick)
    ->Name("Tick/validator")
    ->ArgNames({"history", "submit"})
    ->ArgsProduct({{1, 0}, {0, 1}})
    ->Iterations(100)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---- Memory/create -------------------------------------------------------------------------------

constexpr std::uint32_t kMemPages = 1'000'000;

// Raw pages, or (typed) float32 pages of shape {bytes / 4}: a typed page also has cold info
// (dtype, shape), as a page made by Python's create_page(shape=..., dtype=...).
mmsb::PageSpec make_page(std::uint64_t bytes, bool typed) {
  mmsb::PageSpec spec;
  spec.size = bytes;
  if (typed) {
    spec.dtype = mmsb::DType::Float32;
    spec.shape = {bytes / sizeof(float)};
  }
  return spec;
}

void BM_Memory(benchmark::State& state) {
  const auto page_bytes = static_cast<std::uint64_t>(state.range(0));
  const bool keep_history = state.range(1) != 0;
  const bool typed = state.range(2) != 0;
  mmsb::MemoryReport m;
  std::uint64_t rss0 = 0, rss1 = 0, rss2 = 0;
  double create_s = 0;
  for (auto _ : state) {
    malloc_trim(0);  // freed heap of earlier rows must not hide this row's growth
    rss0 = rss_bytes();
    mmsb::BusOptions o;
    o.keep_history = keep_history;
    mmsb::Bus bus(o);
    const mmsb::PageSpec spec = make_page(page_bytes, typed);
    std::vector<std::byte*> data;
    data.reserve(kMemPages);
    const Clock::time_point t0 = Clock::now();
    for (std::uint32_t i = 0; i < kMemPages; ++i) data.push_back(bus.create_page(spec).data);
    create_s = seconds_since(t0);
    state.SetIterationTime(create_s);
    rss1 = rss_bytes();
    m = bus.memory();
    // Fresh arena slabs are untouched zero mappings (not resident): touch every page's first and
    // last byte directly (no delta, nothing logged) to see the resident cost of the data too.
    for (std::byte* p : data) {
      p[0] = std::byte{1};
      p[page_bytes - 1] = std::byte{1};
    }
    rss2 = rss_bytes() - data.capacity() * sizeof(std::byte*);
  }
  const double pages = kMemPages;
  const double total = static_cast<double>(m.total_bytes());
  const double overhead = total - static_cast<double>(m.data_bytes);
  state.counters["total_MiB"] = total / kMiB;
  state.counters["data_MiB"] = static_cast<double>(m.data_bytes) / kMiB;
  state.counters["overhead_MiB"] = overhead / kMiB;
  state.counters["overhead_B_per_page"] = overhead / pages;
  state.counters["slack_MiB"] = static_cast<double>(m.arena_slack_bytes) / kMiB;
  state.counters["metadata_B_per_page"] = static_cast<double>(m.metadata_bytes) / pages;
  state.counters["index_MiB"] = static_cast<double>(m.index_bytes) / kMiB;
  state.counters["log_MiB"] = static_cast<double>(m.log_bytes) / kMiB;
  state.counters["cache_MiB"] = static_cast<double>(m.cache_bytes) / kMiB;
  state.counters["graph_queue_MiB"] = static_cast<double>(m.graph_bytes + m.queue_bytes) / kMiB;
  // RSS growth right after creation (data not yet resident) and after touching every page.
  state.counters["rss_growth_MiB"] = (static_cast<double>(rss1) - static_cast<double>(rss0)) / kMiB;
  state.counters["rss_touched_growth_MiB"] = (static_cast<double>(rss2) - static_cast<double>(rss0)) / kMiB;
  state.counters["rss_touched_minus_total_MiB"] = (static_cast<double>(rss2) - static_cast<double>(rss0) - total) / kMiB;
  state.counters["create_us_per_page"] = create_s * 1e6 / pages;
  // Targets: all bytes <= 1 GiB of data + 64 MiB of overhead (validator 7: total <= 1 GiB);
  // metadata <= 64 B/page.
  state.counters["overhead_le_64MiB"] = overhead <= 64.0 * kMiB ? 1 : 0;
  state.counters["total_le_1GiB"] = total <= 1024.0 * kMiB ? 1 : 0;
  state.SetItemsProcessed(state.iterations() * kMemPages);
  state.SetLabel(std::to_string(page_bytes) + " B " + (typed ? "float32" : "raw") + " pages, " +
                 (keep_history ? "history" : "no-history"));
}
BENCHMARK(BM_Memory)
    ->Name("Memory/create1M")
    ->ArgNames({"page_bytes", "history", "typed"})
    ->ArgsProduct({{1024, 960}, {0, 1}, {0, 1}})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---- Gc/pause ------------------------------------------------------------------------------------

constexpr std::uint32_t kGcPages = 1'000'000;
constexpr std::uint32_t kGcChurn = kGcPages / 100;
constexpr std::uint64_t kGcPageBytes = 1024;

void BM_GcPause(benchmark::State& state) {
  const std::int64_t pattern = state.range(0) % 3;
  const bool typed = state.range(0) >= 3;
  mmsb::BusOptions o;
  o.keep_history = false;
  mmsb::Bus bus(o);
  const mmsb::PageSpec spec = make_page(kGcPageBytes, typed);
  std::deque<PageId> live;  // creation (= id) order
  for (std::uint32_t i = 0; i < kGcPages; ++i) live.push_back(bus.create_page(spec).id);
  bus.gc();  // the creation's caches are not this row's
  std::mt19937_64 rng(kSeed + 2);

  auto remove_victims = [&] {
    if (pattern == 0) {  // partial Fisher-Yates: the first kGcChurn slots become the victims
      for (std::uint32_t k = 0; k < kGcChurn; ++k) {
        std::uniform_int_distribution<std::size_t> pick(k, live.size() - 1);
        std::swap(live[k], live[pick(rng)]);
      }
    }
    for (std::uint32_t k = 0; k < kGcChurn; ++k) {
      bus.delete_page(live.front());
      live.pop_front();
    }
  };
  auto create = [&] {
    for (std::uint32_t k = 0; k < kGcChurn; ++k) live.push_back(bus.create_page(spec).id);
  };

  std::vector<double> pause_ms, call_ms, freed_KiB, released_MiB, delete_ms, create_ms;
  for (auto _ : state) {
    Clock::time_point t = Clock::now();
    remove_victims();
    delete_ms.push_back(seconds_since(t) * 1e3);
    if (pattern != 1) {
      t = Clock::now();
      create();
      create_ms.push_back(seconds_since(t) * 1e3);
    }
    t = Clock::now();
    const mmsb::GcReport r = bus.gc();
    const double s = seconds_since(t);
    state.SetIterationTime(s);
    call_ms.push_back(s * 1e3);
    pause_ms.push_back(static_cast<double>(r.pause_ns) * 1e-6);
    freed_KiB.push_back(static_cast<double>(r.bytes_freed) / 1024.0);
    released_MiB.push_back(static_cast<double>(r.arena_bytes_released) / kMiB);
    if (pattern == 1) {
      t = Clock::now();
      create();
      create_ms.push_back(seconds_since(t) * 1e3);
    }
  }
  if (bus.page_count() != kGcPages) {
    state.SkipWithError("live page count drifted");
    return;
  }
  report_quantiles(state, "pause", pause_ms, "_ms");  // GcReport::pause_ns
  report_quantiles(state, "gc_call", call_ms, "_ms");
  state.counters["freed_mean_KiB"] = mean(freed_KiB);
  state.counters["arena_released_mean_MiB"] = mean(released_MiB);
  state.counters["delete10k_mean_ms"] = mean(delete_ms);
  state.counters["create10k_mean_ms"] = mean(create_ms);
  state.counters["mem_MiB"] = static_cast<double>(bus.memory().total_bytes()) / kMiB;
  state.counters["p99_lt_3ms"] = quantile(pause_ms, 0.99) < 3.0 ? 1 : 0;
  state.SetLabel(std::string(typed ? "float32 pages, " : "raw pages, ") +
                 (pattern == 0   ? "random 1%, delete+create, gc"
                  : pattern == 1 ? "oldest 1%, delete, gc, create"
                                 : "oldest 1%, delete+create, gc"));
}
BENCHMARK(BM_GcPause)
    ->Name("Gc/pause")
    ->ArgName("pattern")
    ->DenseRange(0, 2)
    ->Iterations(150)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
// Typed pages: gc() also sizes every page's cold info (memory()), far slower, so 100 iterations.
BENCHMARK(BM_GcPause)
    ->Name("Gc/pause")
    ->ArgName("pattern")
    ->Arg(3)
    ->Iterations(100)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
