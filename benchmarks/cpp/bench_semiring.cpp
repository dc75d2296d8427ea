// The semiring reduce kernel (out[i] = ⊕_k w_k ⊗ parent_k[i]) against its floor, a memcpy of the
// same input bytes.
//
// Workload: 4 parents x 1024 elements (float32: 16 KiB in, int64: 32 KiB in; all L1/L2
// resident), 64-byte aligned like arena pages, small random values with a few infinities.
// items_per_second counts input elements (parents x count) per second; bytes_per_second counts
// the input bytes, so the memcpy rows compare directly. Variants per semiring and dtype:
//   reduce/<semiring>/<dtype>/dispatch           semiring_reduce as the engine calls it (AVX2
//                                                where the CPU has it), no weights
//   reduce/<semiring>/<dtype>/dispatch_weighted  the same with one weight per parent
//   reduce/<semiring>/<dtype>/portable           the baseline x86-64 (SSE2) build of the loops
// And one row per page size for the many small pages of a large wave:
//   reduce_pages/sum_product/float64/bytes:N     4,096 reduces of N-byte pages, each from 3
//                                                parents spread over a pool of 4,096 pages (as
//                                                a wave's parents are), semiring_reduce as the
//                                                engine calls it; items_per_second = pages
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <type_traits>

#include "../../cpp/src/graph/SemiringOps.hpp"
#include "mmsb/core/CpuFeatures.hpp"
#include "mmsb/graph/Semiring.hpp"

namespace {

using mmsb::DType;
using mmsb::SemiringKind;
using mmsb::SimdLevel;

constexpr std::size_t kParents = 4;
constexpr std::size_t kCount = 1024;
constexpr std::uint64_t kSeed = 20'240'611;

// One page-like buffer per parent plus the output, aligned as the arena aligns pages.
template <class T>
struct alignas(64) Buffers {
  alignas(64) T parents[kParents][kCount];
  alignas(64) T out[kParents * kCount];  // kParents x count: also the memcpy destination
};

template <class T>
Buffers<T>& buffers() {
  static Buffers<T>* b = [] {
    auto* made = new Buffers<T>();
    std::mt19937_64 rng(kSeed);
    std::uniform_int_distribution<int> small(-100, 100);
    for (auto& parent : made->parents) {
      for (T& v : parent) {
        // 1 in 64 an infinity, so the saturating / IEEE-infinity paths are exercised too.
        if (rng() % 64 == 0) {
          v = std::is_floating_point_v<T> ? std::numeric_limits<T>::infinity()
                                          : std::numeric_limits<T>::max();
        } else {
          v = static_cast<T>(small(rng));
        }
      }
    }
    return made;
  }();
  return *b;
}

template <class T>
void run_reduce(benchmark::State& state, SemiringKind s, DType dtype, SimdLevel level, bool weighted) {
  Buffers<T>& b = buffers<T>();
  const std::byte* ptrs[kParents];
  for (std::size_t k = 0; k < kParents; ++k) ptrs[k] = reinterpret_cast<const std::byte*>(b.parents[k]);
  const double weight_values[kParents] = {1, 2, 3, 4};
  const std::span<const double> weights =
      weighted ? std::span<const double>(weight_values) : std::span<const double>();
  auto* out = reinterpret_cast<std::byte*>(b.out);
  for (auto _ : state) {
    mmsb::semiring_detail::reduce_at(level, s, dtype, ptrs, weights, out, kCount);
    benchmark::DoNotOptimize(out);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kParents * kCount));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kParents * kCount * sizeof(T)));
}

template <class T>
void run_memcpy(benchmark::State& state) {
  Buffers<T>& b = buffers<T>();
  for (auto _ : state) {
    std::memcpy(b.out, b.parents, sizeof b.parents);
    benchmark::DoNotOptimize(b.out);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kParents * kCount));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * sizeof b.parents));
}

template <class T>
void register_dtype(DType dtype) {
  const std::string type(mmsb::dtype_name(dtype));
  benchmark::RegisterBenchmark(("memcpy/" + type).c_str(), run_memcpy<T>);
  struct Variant {
    const char* name;
    SimdLevel level;
    bool weighted;
  };
  const Variant variants[] = {{"dispatch", mmsb::simd_level(), false},
                              {"dispatch_weighted", mmsb::simd_level(), true},
                              {"portable", SimdLevel::Scalar, false}};
  for (SemiringKind s : mmsb::kAllSemirings) {
    for (const Variant& v : variants) {
      const std::string name = "reduce/" + std::string(mmsb::semiring_name(s)) + "/" + type + "/" + v.name;
      benchmark::RegisterBenchmark(name.c_str(), [s, dtype, v](benchmark::State& state) {
        run_reduce<T>(state, s, dtype, v.level, v.weighted);
      });
    }
  }
}

void run_reduce_pages(benchmark::State& state) {
  constexpr std::size_t kPages = 4096;
  constexpr std::size_t kFanIn = 3;
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t count = bytes / sizeof(double);
  // Pages 64-byte aligned like the arena's; the outputs rotate over 8 pages, as a wave's scratch.
  auto* pool = static_cast<double*>(std::aligned_alloc(64, (kPages + 8) * bytes));
  if (pool == nullptr) {
    state.SkipWithError("out of memory for the page pool");
    return;
  }
  std::mt19937_64 rng(kSeed);
  for (std::size_t i = 0; i < (kPages + 8) * count; ++i) pool[i] = static_cast<double>(rng() % 200) - 100;
  for (auto _ : state) {
    for (std::size_t page = 0; page < kPages; ++page) {
      const std::byte* ins[kFanIn];
      for (std::size_t k = 0; k < kFanIn; ++k) {
        ins[k] = reinterpret_cast<const std::byte*>(pool + ((page * 7 + k * 131) % kPages) * count);
      }
      auto* out = reinterpret_cast<std::byte*>(pool + (kPages + page % 8) * count);
      mmsb::semiring_reduce(SemiringKind::SumProduct, DType::Float64, ins, {}, out, count);
      benchmark::DoNotOptimize(out);
    }
    benchmark::ClobberMemory();
  }
  std::free(pool);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kPages));
}
BENCHMARK(run_reduce_pages)->Name("reduce_pages/sum_product/float64")->ArgName("bytes")->Arg(64)->Arg(128)->Arg(256)->Arg(512)->Arg(1024);

// Registered at start-up (benchmark_main supplies main) so the names carry the semiring.
[[maybe_unused]] const bool kRegistered = [] {
  benchmark::AddCustomContext("simd_level", std::string(mmsb::simd_level_name(mmsb::simd_level())));
  register_dtype<float>(DType::Float32);
  register_dtype<std::int64_t>(DType::Int64);
  return true;
}();

}  // namespace
