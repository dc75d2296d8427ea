#pragma once
// Internal to the engine: the law checker templated on the semiring operations (SemiringScalar.hpp)
// and the reduce entry point with an explicit SIMD level. Semiring.cpp instantiates them; tests
// and benchmarks include this header (by relative path) to run the checker on deliberately broken
// operations and to reach both SIMD paths.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "SemiringScalar.hpp"
#include "mmsb/core/CpuFeatures.hpp"
#include "mmsb/graph/Semiring.hpp"

namespace mmsb::semiring_detail {

/// Where check_laws draws its operands: numerator/denominator with the numerator uniform in
/// [lo, hi] (dyadic values for floats, so + and × of a few of them are exact), or with
/// probability 1/8 one of `specials` (identities, infinities).
template <class T>
struct SampleSpace {
  std::int64_t lo = -1000;
  std::int64_t hi = 1000;
  std::int64_t denominator = 1;
  std::vector<T> specials;

  T draw(std::mt19937_64& rng) const {
    if (!specials.empty() && rng() % 8 == 0) return specials[rng() % specials.size()];
    const std::int64_t k = std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
    if constexpr (std::is_floating_point_v<T>) {
      return static_cast<T>(static_cast<double>(k) / static_cast<double>(denominator));
    } else {
      return static_cast<T>(k);
    }
  }
};

/// A value as violation messages show it (bool-typed uint8_t as a number, floats round-trip).
template <class T>
std::string format_value(T v) {
  std::ostringstream out;
  if constexpr (std::is_floating_point_v<T>) {
    out.precision(std::numeric_limits<T>::max_digits10);
    out << v;
  } else {
    out << static_cast<std::int64_t>(v);
  }
  return out.str();
}

/// Equality as the laws use it: by truth value (boolean), within relative tolerance (floating
/// sum_product), exact otherwise.
template <class Ops>
bool same(typename Ops::Value a, typename Ops::Value b, double tolerance) noexcept {
  using T = typename Ops::Value;
  if constexpr (Ops::kTruth) {
    return (a != T{0}) == (b != T{0});
  } else if constexpr (Ops::kTolerant) {
    if (a == b) return true;
    const double x = static_cast<double>(a);
    const double y = static_cast<double>(b);
    return std::abs(x - y) <= tolerance * std::max(std::abs(x), std::abs(y));
  } else {
    return a == b;
  }
}

/// Cap on the messages kept in a report; a last line counts the rest.
inline constexpr std::size_t kMaxViolations = 32;

/// The laws of the header's check_semiring_laws, on `samples` triples drawn from `space`.
template <class Ops>
SemiringLawReport check_laws(const SampleSpace<typename Ops::Value>& space, std::uint64_t samples,
                             std::uint64_t seed, double tolerance) {
  using T = typename Ops::Value;
  SemiringLawReport report;
  std::uint64_t omitted = 0;
  const T zero = Ops::zero();
  const T one = Ops::one();
  std::mt19937_64 rng(seed);
  auto law = [&](const char* name, const char* operands, std::initializer_list<T> values, T lhs, T rhs) {
    ++report.checks;
    if (same<Ops>(lhs, rhs, tolerance)) return;
    if (report.violations.size() >= kMaxViolations) {
      ++omitted;
      return;
    }
    std::string text = std::string(name) + " fails for " + operands + " = (";
    const char* sep = "";
    for (T v : values) {
      text += sep + format_value(v);
      sep = ", ";
    }
    text += "): " + format_value(lhs) + " != " + format_value(rhs);
    report.violations.push_back(std::move(text));
  };
  for (std::uint64_t n = 0; n < samples; ++n) {
    const T a = space.draw(rng);
    const T b = space.draw(rng);
    const T c = space.draw(rng);
    law("associativity of ⊕", "(a, b, c)", {a, b, c}, Ops::add(Ops::add(a, b), c),
        Ops::add(a, Ops::add(b, c)));
    law("commutativity of ⊕", "(a, b)", {a, b}, Ops::add(a, b), Ops::add(b, a));
    law("associativity of ⊗", "(a, b, c)", {a, b, c}, Ops::mul(Ops::mul(a, b), c),
        Ops::mul(a, Ops::mul(b, c)));
    law("identity 0 ⊕ a = a", "(a)", {a}, Ops::add(zero, a), a);
    law("identity a ⊕ 0 = a", "(a)", {a}, Ops::add(a, zero), a);
    law("identity 1 ⊗ a = a", "(a)", {a}, Ops::mul(one, a), a);
    law("identity a ⊗ 1 = a", "(a)", {a}, Ops::mul(a, one), a);
    law("annihilation 0 ⊗ a = 0", "(a)", {a}, Ops::mul(zero, a), zero);
    law("annihilation a ⊗ 0 = 0", "(a)", {a}, Ops::mul(a, zero), zero);
    law("left distributivity a ⊗ (b ⊕ c) = (a ⊗ b) ⊕ (a ⊗ c)", "(a, b, c)", {a, b, c},
        Ops::mul(a, Ops::add(b, c)), Ops::add(Ops::mul(a, b), Ops::mul(a, c)));
    law("right distributivity (b ⊕ c) ⊗ a = (b ⊗ a) ⊕ (c ⊗ a)", "(a, b, c)", {a, b, c},
        Ops::mul(Ops::add(b, c), a), Ops::add(Ops::mul(b, a), Ops::mul(c, a)));
  }
  if (omitted > 0) report.violations.push_back("... and " + std::to_string(omitted) + " more violations");
  return report;
}

/// semiring_reduce on an explicit SIMD level (Avx2 falls back to the portable loops off x86-64).
/// Same contract and preconditions as semiring_reduce; Avx2 also needs a CPU with AVX2 (the engine
/// passes simd_level()).
void reduce_at(SimdLevel level, SemiringKind s, DType dtype, std::span<const std::byte* const> parents,
               std::span<const double> weights, std::byte* out, std::uint64_t count);

}  // namespace mmsb::semiring_detail
