// The semiring reduce kernel against a naive scalar reference for every semiring and supported
// dtype (both SIMD paths, random parent counts, weights on and off, lengths that end in vector
// tails or cross the kernel's blocks), integer saturation and wrapping, NaN and truth-value rules.
// Names, dtype/weight checks and the law checker: SemiringLawTest.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../../../cpp/src/graph/SemiringOps.hpp"
#include "SemiringCombos.hpp"
#include "TestUtil.hpp"
#include "mmsb/graph/Semiring.hpp"

namespace mmsb {
namespace {

using semiring_detail::reduce_at;
using test::Rng;
using test::uniform;

template <class T>
constexpr T kMax = std::numeric_limits<T>::max();
template <class T>
constexpr T kMin = std::numeric_limits<T>::lowest();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- naive reference (written independently of SemiringOps: 64-bit wrapping, std::min/max) ----
template <class T>
T wrap(std::uint64_t v) {
  return static_cast<T>(v);  // modular since C++20
}
template <class T>
bool truth(T v) {
  return v != T{0};
}
template <class T>
T ref_zero(SemiringKind s) {
  const bool fp = std::is_floating_point_v<T>;
  switch (s) {
    case SemiringKind::MinPlus: return fp ? std::numeric_limits<T>::infinity() : kMax<T>;
    case SemiringKind::MaxPlus:
    case SemiringKind::MaxMin:
      if (std::is_same_v<T, std::uint8_t>) return 0;  // max_min on bool is boolean
      return fp ? -std::numeric_limits<T>::infinity() : kMin<T>;
    default: return T{0};
  }
}
template <class T>
T ref_add(SemiringKind s, T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    const bool min_or_max = s != SemiringKind::Boolean && s != SemiringKind::SumProduct;
    if (min_or_max && (std::isnan(a) || std::isnan(b))) return a + b;  // NaN propagates
  }
  if (s == SemiringKind::Boolean || std::is_same_v<T, std::uint8_t>) return truth(a) || truth(b) ? 1 : 0;
  switch (s) {
    case SemiringKind::SumProduct:
      if constexpr (std::is_integral_v<T>) {
        return wrap<T>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b));
      } else {
        return a + b;
      }
    case SemiringKind::MinPlus: return std::min(a, b);
    default: return std::max(a, b);
  }
}
template <class T>
T ref_mul(SemiringKind s, T a, T b) {
  if (s == SemiringKind::Boolean || std::is_same_v<T, std::uint8_t>) return truth(a) && truth(b) ? 1 : 0;
  if constexpr (std::is_floating_point_v<T>) {
    if (s == SemiringKind::MaxMin) return std::isnan(a) || std::isnan(b) ? a + b : std::min(a, b);
    return s == SemiringKind::SumProduct ? a * b : a + b;
  } else {
    const auto sum = wrap<T>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b));
    switch (s) {
      case SemiringKind::SumProduct:
        return wrap<T>(static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b));
      case SemiringKind::MinPlus: return a == kMax<T> || b == kMax<T> ? kMax<T> : sum;
      case SemiringKind::MaxPlus: return a == kMin<T> || b == kMin<T> ? kMin<T> : sum;
      default: return std::min(a, b);
    }
  }
}
template <class T>
T ref_weight(double w) {
  if constexpr (std::is_integral_v<T>) {
    if (w == kInf) return kMax<T>;
    if (w == -kInf) return kMin<T>;
  }
  return static_cast<T>(w);
}
template <class T>
std::vector<T> reference(SemiringKind s, const std::vector<std::vector<T>>& parents,
                         const std::vector<double>& w, std::size_t count) {
  std::vector<T> out(count, ref_zero<T>(s));
  for (std::size_t i = 0; i < count; ++i) {
    for (std::size_t k = 0; k < parents.size(); ++k) {
      const T term = w.empty() ? parents[k][i] : ref_mul(s, ref_weight<T>(w[k]), parents[k][i]);
      // The first term initialises: (zero ⊕ x) is x, and for boolean the truth value of x.
      out[i] = k == 0 ? ref_add(s, ref_zero<T>(s), term) : ref_add(s, out[i], term);
    }
  }
  return out;
}
template <class T>
bool same_value(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  }
  return a == b;
}

// The AVX2 clone runs wherever the CPU has AVX2, even when MMSB_SIMD=scalar picks the portable path.
bool cpu_has_avx2() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

// ---- random inputs: small values, the infinities and (integers) wrap-provoking extremes ----
template <class T>
T random_value(Rng& rng, bool is_bool) {
  if (is_bool) return static_cast<T>(uniform(rng, 0, 9) == 0 ? 2 : uniform(rng, 0, 1));  // 2: nonzero byte
  const std::uint64_t pick = uniform(rng, 0, 19);
  if (pick == 0) return std::is_floating_point_v<T> ? std::numeric_limits<T>::infinity() : kMax<T>;
  if (pick == 1) return std::is_floating_point_v<T> ? -std::numeric_limits<T>::infinity() : kMin<T>;
  const auto k = static_cast<std::int64_t>(uniform(rng, 0, 400)) - 200;
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(static_cast<double>(k) / 4.0);
  } else {
    return static_cast<T>(k);
  }
}
double random_weight(Rng& rng, SemiringKind s, DType dtype) {
  if (dtype == DType::Bool) return static_cast<double>(uniform(rng, 0, 1));
  const bool fp = dtype == DType::Float32 || dtype == DType::Float64;
  const bool infinities = fp || (s != SemiringKind::SumProduct && s != SemiringKind::Boolean);
  const std::uint64_t pick = uniform(rng, 0, 9);
  if (infinities && pick == 0) return kInf;
  if (infinities && pick == 1) return -kInf;
  const auto k = static_cast<double>(static_cast<std::int64_t>(uniform(rng, 0, 40)) - 20);
  return fp ? k / 4.0 : k;
}

template <class T>
void check_reduce_matches_reference(SemiringKind s, DType dtype) {
  Rng rng(0x5e31 + static_cast<unsigned>(s) * 16 + static_cast<unsigned>(dtype));
  // Odd lengths end in scalar tails of the vector loops; 2049 and 8195 cross the kernel's blocks.
  for (std::size_t count : {0, 1, 2, 3, 7, 15, 17, 31, 33, 65, 1000, 2049, 8195}) {
    for (int round = 0; round < 6; ++round) {
      const std::size_t n_parents = uniform(rng, 0, 5);
      std::vector<std::vector<T>> parents(n_parents, std::vector<T>(count));
      std::vector<const std::byte*> ptrs;
      for (auto& p : parents) {
        for (T& v : p) v = random_value<T>(rng, dtype == DType::Bool);
        ptrs.push_back(reinterpret_cast<const std::byte*>(p.data()));
      }
      std::vector<double> weights;
      if (round % 2 == 1) {
        for (std::size_t k = 0; k < n_parents; ++k) weights.push_back(random_weight(rng, s, dtype));
      }
      for (double w : weights) ASSERT_NO_THROW(check_semiring_weight(s, dtype, w)) << w;
      const std::vector<T> expected = reference(s, parents, weights, count);
      for (SimdLevel level : {SimdLevel::Scalar, SimdLevel::Avx2, simd_level()}) {
        if (level == SimdLevel::Avx2 && !cpu_has_avx2()) continue;
        std::vector<T> out(count + 1, T{7});  // one sentinel past the end
        reduce_at(level, s, dtype, ptrs, weights, reinterpret_cast<std::byte*>(out.data()), count);
        if (level == simd_level()) {
          std::vector<T> pub(count);
          semiring_reduce(s, dtype, ptrs, weights, reinterpret_cast<std::byte*>(pub.data()), count);
          for (std::size_t i = 0; i < count; ++i) ASSERT_TRUE(same_value(pub[i], out[i])) << i;
        }
        ASSERT_EQ(out[count], T{7}) << "wrote past count " << count;
        for (std::size_t i = 0; i < count; ++i) {
          ASSERT_TRUE(same_value(out[i], expected[i]))
              << semiring_name(s) << "/" << dtype_name(dtype) << " level " << simd_level_name(level)
              << " count " << count << " parents " << n_parents << " weighted " << !weights.empty() << " at "
              << i << ": got " << +out[i] << ", expected " << +expected[i];
        }
      }
    }
  }
}

using Combo = test::SemiringCombo;
using test::combo_name;
using test::supported_combos;

class SemiringComboTest : public ::testing::TestWithParam<Combo> {};

TEST_P(SemiringComboTest, ReduceMatchesNaiveReference) {
  const auto [s, d] = GetParam();
  switch (d) {
    case DType::Int32: check_reduce_matches_reference<std::int32_t>(s, d); break;
    case DType::Int64: check_reduce_matches_reference<std::int64_t>(s, d); break;
    case DType::Float32: check_reduce_matches_reference<float>(s, d); break;
    case DType::Float64: check_reduce_matches_reference<double>(s, d); break;
    default: check_reduce_matches_reference<std::uint8_t>(s, d); break;
  }
}

INSTANTIATE_TEST_SUITE_P(Supported, SemiringComboTest, ::testing::ValuesIn(supported_combos()), combo_name);

template <class T>
std::vector<T> reduce_values(SemiringKind s, DType d, const std::vector<std::vector<T>>& parents,
                             const std::vector<double>& weights = {}) {
  const std::size_t n = parents.empty() ? 4 : parents[0].size();
  std::vector<const std::byte*> ptrs;
  for (const auto& p : parents) ptrs.push_back(reinterpret_cast<const std::byte*>(p.data()));
  std::vector<T> out(n);
  semiring_reduce(s, d, ptrs, weights, reinterpret_cast<std::byte*>(out.data()), n);
  return out;
}

TEST(SemiringReduceTest, IntegerInfinitiesSaturateAndOtherSumsWrap) {
  using MinPlus32 = semiring_detail::MinPlus<std::int32_t>;
  using MaxPlus64 = semiring_detail::MaxPlus<std::int64_t>;
  EXPECT_EQ(MinPlus32::mul(kMax<std::int32_t>, -5), kMax<std::int32_t>);
  EXPECT_EQ(MinPlus32::mul(3, kMax<std::int32_t>), kMax<std::int32_t>);
  EXPECT_EQ(MaxPlus64::mul(kMin<std::int64_t>, 9), kMin<std::int64_t>);
  EXPECT_EQ(MaxPlus64::mul(-9, kMin<std::int64_t>), kMin<std::int64_t>);
  EXPECT_EQ(MinPlus32::mul(kMax<std::int32_t> - 1, 2), kMin<std::int32_t>);  // wraps, no UB
  EXPECT_EQ(semiring_detail::SumProduct<std::int32_t>::add(kMax<std::int32_t>, 1), kMin<std::int32_t>);
  EXPECT_EQ(semiring_detail::SumProduct<std::int64_t>::mul(kMax<std::int64_t>, 2), -2);
  using V32 = std::vector<std::int32_t>;
  const std::int32_t inf = kMax<std::int32_t>;
  EXPECT_EQ(reduce_values<std::int32_t>(SemiringKind::MinPlus, DType::Int32, {{inf, inf, 5, inf}}, {7}),
            (V32{inf, inf, 12, inf}));
  EXPECT_EQ(reduce_values<std::int32_t>(SemiringKind::MinPlus, DType::Int32, {{inf, 1, 5, 0}, {2, inf, 2, 0}},
                                        {kInf, 0}),
            (V32{2, inf, 2, 0}));
  const std::int64_t ninf = kMin<std::int64_t>;
  EXPECT_EQ(reduce_values<std::int64_t>(SemiringKind::MaxPlus, DType::Int64, {{ninf, -1, 5, 0}}, {-3}),
            (std::vector<std::int64_t>{ninf, -4, 2, -3}));
}

TEST(SemiringReduceTest, NoParentsGiveTheAdditiveIdentity) {
  EXPECT_EQ(reduce_values<float>(SemiringKind::SumProduct, DType::Float32, {}), std::vector<float>(4, 0.0f));
  EXPECT_EQ(reduce_values<std::int32_t>(SemiringKind::MinPlus, DType::Int32, {}),
            std::vector(4, kMax<std::int32_t>));
  EXPECT_EQ(reduce_values<std::int64_t>(SemiringKind::MaxPlus, DType::Int64, {}),
            std::vector(4, kMin<std::int64_t>));
  EXPECT_EQ(reduce_values<double>(SemiringKind::MaxMin, DType::Float64, {}), std::vector(4, -kInf));
  EXPECT_EQ(reduce_values<std::uint8_t>(SemiringKind::Boolean, DType::Bool, {}),
            std::vector<std::uint8_t>(4, 0));
}

TEST(SemiringReduceTest, BooleanUsesTruthValuesAndYieldsZeroOrOne) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(
      reduce_values<float>(SemiringKind::Boolean, DType::Float32, {{0.0f, -0.0f, 0.5f, nan, -3.0f, 0.0f}}),
      (std::vector<float>{0, 0, 1, 1, 1, 0}));
  EXPECT_EQ(
      reduce_values<std::int64_t>(SemiringKind::Boolean, DType::Int64, {{0, 0, 9, -1}, {0, 5, 0, 0}}, {4, 0}),
      (std::vector<std::int64_t>{0, 0, 1, 1}));
  // A bool byte other than 0/1 is true; max_min on bool is boolean.
  EXPECT_EQ(
      reduce_values<std::uint8_t>(SemiringKind::MaxMin, DType::Bool, {{2, 0, 2, 0}, {0, 0, 3, 1}}, {1, 1}),
      (std::vector<std::uint8_t>{1, 0, 1, 1}));
}

TEST(SemiringReduceTest, FloatMinMaxPropagateNaNWhicheverParentHasIt) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (SemiringKind s : {SemiringKind::MinPlus, SemiringKind::MaxPlus, SemiringKind::MaxMin}) {
    const auto out = reduce_values<float>(s, DType::Float32, {{nan, 1.0f, 2.0f}, {1.0f, nan, 3.0f}});
    EXPECT_TRUE(std::isnan(out[0]) && std::isnan(out[1])) << semiring_name(s);
    EXPECT_EQ(out[2], s == SemiringKind::MinPlus ? 2.0f : 3.0f) << semiring_name(s);
  }
}

}  // namespace
}  // namespace mmsb
