// The batch apply path against its hardware floor, and the two diff kernels.
//
// Workload: as benchmarks/workloads.py (64-byte deltas to uniformly random pages and 64-aligned
// slots of 16,384 x 4 KiB pages, random payload); the C++ generator differs from NumPy's, the
// layout and distribution are the same. Apply benchmarks report wall-clock items_per_second
// (UseRealTime): CPU time of the calling thread would hide the pool threads' work.
// BM_BusApplyBatch's `log` argument: 0 the in-memory log (history, the default bus), 1 a bus
// directory in durability flush (a temporary directory), 2 no log (keep_history=false).
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <new>
#include <numeric>
#include <random>
#include <string>
#include <span>
#include <utility>
#include <vector>

#include "mmsb/core/CpuFeatures.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/delta/Diff.hpp"
#include "mmsb/engine/Bus.hpp"

namespace {

constexpr std::size_t kPages = 16'384;
constexpr std::size_t kPageSize = 4096;
constexpr std::size_t kDeltaBytes = 64;
constexpr std::uint64_t kSeed = 20'240'611;

// `rows` rows of kDeltaBytes random bytes, row i into the (page id, offset) slot_of(rng, i) gives.
template <class SlotOf>
std::unique_ptr<mmsb::DeltaBatch> make_rows(std::size_t rows, std::mt19937_64& rng, SlotOf slot_of) {
  auto batch = std::make_unique<mmsb::DeltaBatch>();
  batch->reserve(rows, rows * kDeltaBytes);
  std::byte payload[kDeltaBytes];
  for (std::size_t i = 0; i < rows; ++i) {
    for (std::size_t j = 0; j < kDeltaBytes; j += 8) {
      const std::uint64_t r = rng();
      std::memcpy(payload + j, &r, 8);
    }
    const auto [page, offset] = slot_of(rng, i);
    batch->add(page, offset, payload);
  }
  return batch;
}

// One batch per row count, built on first use and shared by every benchmark that applies it.
const mmsb::DeltaBatch& workload(std::size_t rows) {
  static std::map<std::size_t, std::unique_ptr<mmsb::DeltaBatch>> cache;
  auto& slot = cache[rows];
  if (!slot) {
    std::mt19937_64 rng(kSeed);
    std::uniform_int_distribution<std::uint64_t> page(1, kPages);  // ids of a fresh bus
    std::uniform_int_distribution<std::uint64_t> offset(0, kPageSize / kDeltaBytes - 1);
    slot = make_rows(rows, rng, [&](std::mt19937_64& r, std::size_t) {
      // Drawn payload first, then page, then offset: the order the generator always had.
      const std::uint64_t p = page(r);
      return std::pair{p, offset(r) * kDeltaBytes};
    });
  }
  return *slot;
}

// The floor: what any store must do per delta — find the page, copy the bytes, count the epoch —
// over the same layout (one 64-byte record per page, 4 KiB blocks in one 64-aligned region) and
// the same columnar input, with nothing else: no validation, lsn, lanes or locking.
struct alignas(64) FloorPage {
  std::byte* data = nullptr;
  std::uint64_t epoch = 0;
};

struct Floor {
  struct Free {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> memory{
      static_cast<std::byte*>(std::aligned_alloc(64, kPages * kPageSize))};
  std::vector<FloorPage> pages = std::vector<FloorPage>(kPages);

  Floor() {
    if (!memory) throw std::bad_alloc();
    std::memset(memory.get(), 0, kPages * kPageSize);  // fault the pages in up front, as the arena does
    for (std::size_t i = 0; i < kPages; ++i) pages[i].data = memory.get() + i * kPageSize;
  }
  void apply(const mmsb::DeltaBatchView& b) {
    const std::byte* payload = b.payload.data();
    std::uint64_t pos = 0;
    for (std::size_t i = 0; i < b.rows(); ++i) {
      FloorPage& p = pages[b.page_ids[i] - 1];
      std::memcpy(p.data + b.offsets[i], payload + pos, b.lengths[i]);
      ++p.epoch;
      pos += b.lengths[i];
    }
  }
};

// Whether the bus's pages 1..kPages hold what one sequential application of `batch` to zeroed
// pages on the floor leaves.
bool pages_match_floor(mmsb::Bus& bus, const mmsb::DeltaBatchView& batch) {
  Floor expected;
  expected.apply(batch);
  std::vector<std::byte> got(kPageSize);
  for (std::size_t i = 0; i < kPages; ++i) {
    bus.read(i + 1, 0, got);
    if (std::memcmp(got.data(), expected.pages[i].data, kPageSize) != 0) return false;
  }
  return true;
}

void set_counters(benchmark::State& state, const mmsb::DeltaBatchView& b) {
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(b.rows()));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(b.payload.size()));
}

void BM_FloorMemcpyEpoch(benchmark::State& state) {
  const mmsb::DeltaBatchView batch = workload(static_cast<std::size_t>(state.range(0))).view();
  Floor floor;
  for (auto _ : state) {
    floor.apply(batch);
    benchmark::ClobberMemory();
  }
  set_counters(state, batch);
}
BENCHMARK(BM_FloorMemcpyEpoch)->ArgName("rows")->Arg(1 << 16)->Arg(1 << 20)->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Where the log goes: the in-memory bus's history (the default), a bus directory in durability
// flush (records handed to the OS page cache), or nowhere (history=False).
enum LogMode : std::int64_t { kMemoryLog = 0, kDirectoryFlush = 1, kNoLog = 2 };

void BM_BusApplyBatch(benchmark::State& state) {
  const auto threads = static_cast<unsigned>(state.range(0));
  const mmsb::DeltaBatchView batch = workload(static_cast<std::size_t>(state.range(1))).view();
  const auto mode = static_cast<LogMode>(state.range(2));
  mmsb::BusOptions options;
  options.threads = threads;
  options.keep_history = mode != kNoLog;
  std::filesystem::path dir;
  if (mode == kDirectoryFlush) {
    dir = std::filesystem::temp_directory_path() / ("mmsb-bench-apply-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    options.path = dir.string();
  }
  state.SetLabel(mode == kMemoryLog ? "memory log" : mode == kDirectoryFlush ? "directory, flush" : "no log");
  {
    mmsb::Bus bus(options);
    mmsb::PageSpec spec;
    spec.size = kPageSize;
    for (std::size_t i = 0; i < kPages; ++i) bus.create_page(spec);

    for (auto _ : state) bus.apply_batch(batch);
    set_counters(state, batch);

    // Re-applying a batch leaves the same bytes, so after any number of iterations the pages must
    // equal one application on the floor: a wrong apply must not report a fast number.
    if (!pages_match_floor(bus, batch)) state.SkipWithError("Bus::apply_batch result differs from the floor's bytes");
  }
  if (!dir.empty()) std::filesystem::remove_all(dir);
}
BENCHMARK(BM_BusApplyBatch)->ArgNames({"threads", "rows", "log"})
    ->ArgsProduct({{1, 2}, {1 << 16, 1 << 20}, {kMemoryLog, kDirectoryFlush, kNoLog}})->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The host's share of a batch into device pages: Bus::apply_batch of 1M 64-byte rows into
// 16,384 "cuda:0" pages of 4 KiB served by the host-memory emulation (cuda::emulate_devices),
// history off, one thread. Everything the engine does per row runs as with a GPU (validation,
// device rows, overlap resolution, epochs); the emulation's write is a host copy, where a GPU
// backend packs pinned staging and launches one kernel. Arg `distinct` 1: each row to its own
// 64-byte slot (as `mmsb bench`'s gpu rows), told disjoint by the line bitmap; 0: the shared
// workload, whose rows repeat slots, so they are sorted and swept (the later row wins).
const mmsb::DeltaBatch& distinct_workload(std::size_t rows) {
  static std::map<std::size_t, std::unique_ptr<mmsb::DeltaBatch>> cache;
  auto& slot = cache[rows];
  if (!slot) {
    std::mt19937_64 rng(kSeed);
    constexpr std::uint64_t kSlotsPerPage = kPageSize / kDeltaBytes;
    std::vector<std::uint64_t> slots(kPages * kSlotsPerPage);
    std::iota(slots.begin(), slots.end(), std::uint64_t{0});
    std::shuffle(slots.begin(), slots.end(), rng);
    slot = make_rows(rows, rng, [&](std::mt19937_64&, std::size_t i) {
      const std::uint64_t s = slots[i % slots.size()];
      return std::pair{1 + s / kSlotsPerPage, s % kSlotsPerPage * kDeltaBytes};
    });
  }
  return *slot;
}

void BM_DeviceBatchHostPath(benchmark::State& state) {
  const bool distinct = state.range(0) != 0;
  const mmsb::DeltaBatchView batch = (distinct ? distinct_workload(1 << 20) : workload(1 << 20)).view();
  mmsb::cuda::emulate_devices(1);
  {
    mmsb::BusOptions options;
    options.threads = 1;
    options.keep_history = false;
    mmsb::Bus bus(options);
    mmsb::PageSpec spec;
    spec.size = kPageSize;
    spec.location = "cuda:0";
    for (std::size_t i = 0; i < kPages; ++i) bus.create_page(spec);
    for (auto _ : state) bus.apply_batch(batch);
    set_counters(state, batch);
    // The pages must hold what the floor's sequential apply leaves (the later row wins).
    if (!pages_match_floor(bus, batch)) state.SkipWithError("device pages differ from the floor's bytes");
  }
  mmsb::cuda::emulate_devices(0);
  state.SetLabel(distinct ? "rows on distinct slots" : "rows repeating slots");
}
BENCHMARK(BM_DeviceBatchHostPath)->ArgName("distinct")->Arg(1)->Arg(0)->UseRealTime()->Unit(benchmark::kMillisecond);

// The stream of `mmsb bench`'s persistence rows (issue 3's flush target): 1M deltas committed in
// batches of `batch` rows into a freshly opened bus directory (its pages created, closed and
// reopened, as mmsb.open finds them) in durability `flush`, on one thread. Unlike
// BM_BusApplyBatch, every iteration starts from a fresh bus, so the page set's first touch and
// the log's fresh file pages are in the figure, as they are for a user opening a bus to load it.
void BM_FlushStream(benchmark::State& state) {
  const auto rows_per_batch = static_cast<std::size_t>(state.range(0));
  const mmsb::DeltaBatchView all = workload(std::size_t{1} << 20).view();
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("mmsb-bench-stream-" + std::to_string(::getpid()));
  for (auto _ : state) {
    state.PauseTiming();
    std::filesystem::remove_all(dir);
    mmsb::BusOptions options;
    options.threads = 1;
    options.path = dir.string();
    options.durability = mmsb::Durability::None;
    {
      mmsb::Bus setup(options);
      mmsb::PageSpec spec;
      spec.size = kPageSize;
      for (std::size_t i = 0; i < kPages; ++i) setup.create_page(spec);
    }
    options.durability = mmsb::Durability::Flush;
    options.must_exist = true;
    auto bus = std::make_unique<mmsb::Bus>(options);
    state.ResumeTiming();
    std::size_t payload_at = 0;
    for (std::size_t a = 0; a < all.rows(); a += rows_per_batch) {
      const std::size_t n = std::min(rows_per_batch, all.rows() - a);
      const std::size_t bytes = n * kDeltaBytes;  // every row of the workload is kDeltaBytes long
      bus->apply_batch({all.page_ids.subspan(a, n), all.offsets.subspan(a, n), all.lengths.subspan(a, n),
                        all.payload.subspan(payload_at, bytes)});
      payload_at += bytes;
    }
    state.PauseTiming();
    bus.reset();
    state.ResumeTiming();
  }
  std::filesystem::remove_all(dir);
  set_counters(state, all);
}
BENCHMARK(BM_FlushStream)->ArgName("batch")->Arg(4096)->UseRealTime()->Unit(benchmark::kMillisecond);

// diff_runs on two 4 KiB buffers differing in `changes` scattered 4-byte runs (0: identical,
// the pure compare cost; 8: a typical small edit; 256: a quarter of the bytes changed).
void BM_DiffRuns(benchmark::State& state, mmsb::SimdLevel level) {
  if (level == mmsb::SimdLevel::Avx2 && mmsb::simd_level() != mmsb::SimdLevel::Avx2) {
    state.SkipWithError("this CPU has no AVX2");
    return;
  }
  const auto changes = static_cast<std::size_t>(state.range(0));
  std::mt19937_64 rng(kSeed);
  std::vector<std::byte> old(kPageSize), now;
  for (auto& b : old) b = static_cast<std::byte>(rng());
  now = old;
  std::vector<std::size_t> words(kPageSize / 4);
  for (std::size_t i = 0; i < words.size(); ++i) words[i] = i;
  std::shuffle(words.begin(), words.end(), rng);
  for (std::size_t i = 0; i < changes; ++i) {
    for (std::size_t j = 0; j < 4; ++j) now[words[i] * 4 + j] ^= std::byte{0xFF};
  }

  std::vector<mmsb::Run> out, reference;
  out.reserve(kPageSize);
  mmsb::diff_runs(mmsb::SimdLevel::Scalar, old.data(), now.data(), kPageSize, reference);
  for (auto _ : state) {
    out.clear();
    mmsb::diff_runs(level, old.data(), now.data(), kPageSize, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(kPageSize));
  state.counters["runs"] = static_cast<double>(out.size());
  if (out != reference) state.SkipWithError("diff_runs differs from the scalar path");
}
BENCHMARK_CAPTURE(BM_DiffRuns, scalar, mmsb::SimdLevel::Scalar)->ArgName("changes")->Arg(0)->Arg(8)->Arg(256);
BENCHMARK_CAPTURE(BM_DiffRuns, avx2, mmsb::SimdLevel::Avx2)->ArgName("changes")->Arg(0)->Arg(8)->Arg(256);

}  // namespace
