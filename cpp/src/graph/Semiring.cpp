#include "mmsb/graph/Semiring.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "SemiringOps.hpp"
#include "mmsb/core/Error.hpp"

namespace mmsb {
namespace {

using namespace semiring_detail;

constexpr std::array<std::string_view, 5> kNames{"sum_product", "min_plus", "max_plus", "max_min", "boolean"};
constexpr std::string_view kNameList = "sum_product, min_plus, max_plus, max_min, boolean";

// Shortest text that reads back as the same double ("0.5", "1e+30", "nan").
std::string format_double(double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc{} ? std::string(buf, end) : std::string("?");
}

// ---- reduce kernel -------------------------------------------------------------------------
// One tight loop per parent, so each is a plain elementwise loop GCC vectorises (a blend for the
// saturating/min/max selects). The element range is cut into blocks that stay in L1 while every
// parent is folded in, so `out` is not streamed through memory once per parent.
constexpr std::uint64_t kBlockBytes = 8192;

template <class Ops, class T>
[[gnu::always_inline]] inline void init_plain(T* __restrict o, const T* __restrict p, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) o[i] = Ops::lift(p[i]);
}
template <class Ops, class T>
[[gnu::always_inline]] inline void init_weighted(T* __restrict o, const T* __restrict p, T w,
                                                 std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) o[i] = Ops::mul(w, p[i]);
}
template <class Ops, class T>
[[gnu::always_inline]] inline void fold_plain(T* __restrict o, const T* __restrict p, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) o[i] = Ops::add(o[i], p[i]);
}
template <class Ops, class T>
[[gnu::always_inline]] inline void fold_weighted(T* __restrict o, const T* __restrict p, T w,
                                                 std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) o[i] = Ops::add(o[i], Ops::mul(w, p[i]));
}

// Pages are 64-byte aligned, so viewing their bytes as T (alignof(T) <= 8) is aligned; a caller
// passing other memory must keep alignof(T) (checked in debug builds; UBSan checks every access).
template <class T>
const T* typed(const std::byte* p) noexcept {
  assert(reinterpret_cast<std::uintptr_t>(p) % alignof(T) == 0 && "semiring_reduce: misaligned parent");
  return reinterpret_cast<const T*>(p);
}

// Elements [begin, begin + n) of `out`, one elementwise loop per parent (vectorised each).
template <class Ops, class T>
[[gnu::always_inline]] inline void reduce_range(std::span<const std::byte* const> parents,
                                                std::span<const double> weights, T* out, std::uint64_t begin,
                                                std::uint64_t n) {
  T* const o = out + begin;
  const T* const p0 = typed<T>(parents[0]) + begin;
  if (!weights.empty()) {
    init_weighted<Ops>(o, p0, weight_as<T>(weights[0]), n);
  } else {
    init_plain<Ops>(o, p0, n);
  }
  for (std::size_t k = 1; k < parents.size(); ++k) {
    const T* const p = typed<T>(parents[k]) + begin;
    if (!weights.empty()) {
      fold_weighted<Ops>(o, p, weight_as<T>(weights[k]), n);
    } else {
      fold_plain<Ops>(o, p, n);
    }
  }
}

// One 64-byte line of `out` at element `at`: every parent folds into accumulators that stay in
// registers (constant trip counts), stored once. Same operations in the same order as
// reduce_range, so the same bits.
template <class Ops, class T>
[[gnu::always_inline]] inline void reduce_line(std::span<const std::byte* const> parents,
                                               std::span<const double> weights, T* out, std::uint64_t at) {
  constexpr std::uint64_t kLine = 64 / sizeof(T);
  T acc[kLine];
  const T* const p0 = typed<T>(parents[0]) + at;
  if (!weights.empty()) {
    const T w = weight_as<T>(weights[0]);
    for (std::uint64_t i = 0; i < kLine; ++i) acc[i] = Ops::mul(w, p0[i]);
  } else {
    for (std::uint64_t i = 0; i < kLine; ++i) acc[i] = Ops::lift(p0[i]);
  }
  for (std::size_t k = 1; k < parents.size(); ++k) {
    const T* const p = typed<T>(parents[k]) + at;
    if (!weights.empty()) {
      const T w = weight_as<T>(weights[k]);
      for (std::uint64_t i = 0; i < kLine; ++i) acc[i] = Ops::add(acc[i], Ops::mul(w, p[i]));
    } else {
      for (std::uint64_t i = 0; i < kLine; ++i) acc[i] = Ops::add(acc[i], p[i]);
    }
  }
  for (std::uint64_t i = 0; i < kLine; ++i) out[at + i] = acc[i];
}

// Pages up to this size go a line at a time (reduce_line): a large wave recomputes many small
// pages, where the per-parent loops' setup and the first parent's memcpy call cost more than the
// arithmetic. Larger pages fold parent by parent over blocks that stay in L1.
constexpr std::uint64_t kLineWiseBytes = 512;

template <class Ops>
[[gnu::always_inline]] inline void reduce_typed(std::span<const std::byte* const> parents,
                                                std::span<const double> weights, std::byte* out_bytes,
                                                std::uint64_t count) {
  using T = typename Ops::Value;
  assert(reinterpret_cast<std::uintptr_t>(out_bytes) % alignof(T) == 0 && "semiring_reduce: misaligned out");
  T* const out = reinterpret_cast<T*>(out_bytes);
  if (parents.empty()) {
    std::fill_n(out, count, Ops::zero());
    return;
  }
  if (count * sizeof(T) <= kLineWiseBytes) {
    constexpr std::uint64_t kLine = 64 / sizeof(T);
    std::uint64_t at = 0;
    for (; at + kLine <= count; at += kLine) reduce_line<Ops>(parents, weights, out, at);
    if (at < count) reduce_range<Ops>(parents, weights, out, at, count - at);
    return;
  }
  constexpr std::uint64_t kBlock = kBlockBytes / sizeof(T);
  for (std::uint64_t begin = 0; begin < count; begin += kBlock) {
    reduce_range<Ops>(parents, weights, out, begin, std::min(kBlock, count - begin));
  }
}

template <class Ops>
void reduce_portable(std::span<const std::byte* const> parents, std::span<const double> weights,
                     std::byte* out, std::uint64_t count) {
  reduce_typed<Ops>(parents, weights, out, count);
}

#if defined(__x86_64__)
// The same loops compiled for AVX2 (8 floats / 4 int64 per instruction, and the 64-bit compares
// that SSE2 lacks for int64 min/max); flatten inlines the Ops into this clone.
template <class Ops>
[[gnu::target("avx2"), gnu::flatten]] void reduce_avx2(std::span<const std::byte* const> parents,
                                                       std::span<const double> weights, std::byte* out,
                                                       std::uint64_t count) {
  reduce_typed<Ops>(parents, weights, out, count);
}
#endif

// ---- law samples -----------------------------------------------------------------------------
// Small integers (exact, no wrap) or dyadic k/8 floats (+ and × of three stay exact in float32),
// plus the values where the laws are most fragile: the infinities that are in the carrier. Not
// -inf for min_plus (+inf + -inf is NaN) nor +inf for max_plus; sum_product integers get the
// extremes because wrapping arithmetic is a ring; boolean also gets NaN, which is true.
template <class Ops>
SampleSpace<typename Ops::Value> sample_space(SemiringKind s) {
  using T = typename Ops::Value;
  SampleSpace<T> space;
  if constexpr (std::is_same_v<Ops, Boolean<std::uint8_t>>) {
    space.lo = 0;
    space.hi = 1;
    return space;
  }
  if constexpr (std::is_floating_point_v<T>) {
    space.lo = -64;
    space.hi = 64;
    space.denominator = 8;
  }
  switch (s) {
    case SemiringKind::SumProduct:
      if constexpr (std::is_integral_v<T>) space.specials = {kPosInf<T>, kNegInf<T>};
      break;
    case SemiringKind::MinPlus: space.specials = {kPosInf<T>}; break;
    case SemiringKind::MaxPlus: space.specials = {kNegInf<T>}; break;
    case SemiringKind::MaxMin: space.specials = {kPosInf<T>, kNegInf<T>}; break;
    case SemiringKind::Boolean:
      space.lo = std::max<std::int64_t>(space.lo, -3);
      space.hi = std::min<std::int64_t>(space.hi, 3);
      space.specials = {kPosInf<T>, kNegInf<T>};
      if constexpr (std::is_floating_point_v<T>) {
        space.specials.push_back(std::numeric_limits<T>::quiet_NaN());
      }
      break;
  }
  return space;
}

}  // namespace

void semiring_detail::fail_dtype(SemiringKind s, DType dtype) {
  if (semiring_name(s) == "unknown") {
    fail(ErrorCode::InvalidArgument, "unknown semiring ", static_cast<int>(s), "; expected one of ", kNameList);
  }
  const bool all_five = s == SemiringKind::Boolean || s == SemiringKind::MaxMin;
  fail(ErrorCode::InvalidArgument, "semiring ", semiring_name(s), " does not support dtype ",
       dtype_name(dtype), "; supported: int32, int64, float32, float64", all_five ? ", bool" : "",
       all_five ? "" : " (bool pages: use the boolean or max_min semiring)");
}

std::string_view semiring_name(SemiringKind s) noexcept {
  const auto i = static_cast<std::size_t>(s) - 1;
  return i < kNames.size() ? kNames[i] : std::string_view("unknown");
}

SemiringKind parse_semiring(std::string_view name) {
  for (SemiringKind s : kAllSemirings) {
    if (semiring_name(s) == name) return s;
  }
  fail(ErrorCode::InvalidArgument, "unknown semiring '", name, "'; expected one of ", kNameList);
}

bool semiring_supports(SemiringKind s, DType dtype) noexcept {
  switch (dtype) {
    case DType::Int32:
    case DType::Int64:
    case DType::Float32:
    case DType::Float64: return semiring_name(s) != "unknown";
    case DType::Bool: return s == SemiringKind::Boolean || s == SemiringKind::MaxMin;
    default: return false;
  }
}

void check_semiring_dtype(SemiringKind s, DType dtype) {
  if (!semiring_supports(s, dtype)) fail_dtype(s, dtype);
}

void check_semiring_weight(SemiringKind s, DType dtype, double weight) {
  check_semiring_dtype(s, dtype);
  auto reject = [&](std::string_view rule) {
    fail(ErrorCode::InvalidArgument, "weight ", format_double(weight), " is not valid for semiring ",
         semiring_name(s), " on ", dtype_name(dtype), " pages: ", rule);
  };
  if (std::isnan(weight)) reject("a weight is never NaN");
  const bool tropical = s == SemiringKind::MinPlus || s == SemiringKind::MaxPlus || s == SemiringKind::MaxMin;
  switch (dtype) {
    case DType::Bool:
      if (weight != 0.0 && weight != 1.0) reject("bool weights must be 0 or 1");
      return;
    case DType::Int32:
    case DType::Int64: {
      // ±inf are the semiring's own infinities (the type's max/min) where the semiring has them.
      if (std::isinf(weight) && tropical) return;
      const bool is32 = dtype == DType::Int32;
      const double lo = is32 ? -2147483648.0 : -9223372036854775808.0;
      // Exclusive upper bound 2^31 / 2^63: exact in double, unlike 2^63 - 1.
      const double hi = is32 ? 2147483648.0 : 9223372036854775808.0;
      if (!(weight >= lo && weight < hi) || std::trunc(weight) != weight) {
        reject(is32 ? "int32 weights must be integers in [-2^31, 2^31) (round it, or use a float page)"
                    : "int64 weights must be integers in [-2^63, 2^63) (round it, or use a float page)");
      }
      return;
    }
    case DType::Float32:
      // Rounding to float32 is accepted; overflowing a finite weight to infinity is not.
      if (std::isfinite(weight) &&
          std::abs(weight) > static_cast<double>(std::numeric_limits<float>::max())) {
        reject("float32 weights must be finite within ±3.4028235e+38, or infinite");
      }
      return;
    default: return;
  }
}

namespace {
SemiringKernel kernel_at(SimdLevel level, SemiringKind s, DType dtype) {
  return visit_ops(s, dtype, [level]<class Ops>(Tag<Ops>) -> SemiringKernel {
#if defined(__x86_64__)
    if (level == SimdLevel::Avx2) return &reduce_avx2<Ops>;
#endif
    (void)level;
    return &reduce_portable<Ops>;
  });
}
}  // namespace

SemiringKernel semiring_kernel(SemiringKind s, DType dtype) { return kernel_at(simd_level(), s, dtype); }

void semiring_reduce(SemiringKind s, DType dtype, std::span<const std::byte* const> parents,
                     std::span<const double> weights, std::byte* out, std::uint64_t count) {
  semiring_detail::reduce_at(simd_level(), s, dtype, parents, weights, out, count);
}

void semiring_detail::reduce_at(SimdLevel level, SemiringKind s, DType dtype,
                                std::span<const std::byte* const> parents, std::span<const double> weights,
                                std::byte* out, std::uint64_t count) {
  assert((weights.empty() || weights.size() == parents.size()) && "semiring_reduce: one weight per parent");
  kernel_at(level, s, dtype)(parents, weights, out, count);
}

SemiringLawReport check_semiring_laws(SemiringKind s, DType dtype, std::uint64_t samples, std::uint64_t seed,
                                      double float_tolerance) {
  return visit_ops(s, dtype, [&]<class Ops>(Tag<Ops>) {
    return check_laws<Ops>(sample_space<Ops>(s), samples, seed, float_tolerance);
  });
}

}  // namespace mmsb
