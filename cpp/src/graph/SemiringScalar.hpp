#pragma once
// Internal to the engine: the scalar operations of every semiring per element type, shared by the
// host reduce (Semiring.cpp, through SemiringOps.hpp) and the device reduce (cuda/DeviceCompute.cu),
// so that a page recomputed on a GPU holds exactly the bytes the host computes: the same
// operations in the same order per element (nvcc compiles that file without FMA contraction, and
// GCC contracts nothing under -std=c++20).
//
// An Ops type provides: Value (the element type), zero()/one() (identities of ⊕/⊗), add (⊕),
// mul (⊗), lift (a parent value as a carrier value: identity except for boolean, which maps
// nonzero to 1) and the flags kTolerant (floating +/×: compare within a relative tolerance) and
// kTruth (boolean: compare by truth value).
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "mmsb/graph/Semiring.hpp"
#include "mmsb/page/DType.hpp"

#if defined(__CUDACC__)
#define MMSB_HD __host__ __device__
#else
#define MMSB_HD
#endif

namespace mmsb::semiring_detail {

// Wrapping arithmetic through the unsigned type: defined modulo 2^bits, never UB (the conversion
// back to the signed type is modular since C++20).
template <class T>
MMSB_HD T wrap_add(T a, T b) noexcept {
  using U = std::make_unsigned_t<T>;
  return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
}
template <class T>
MMSB_HD T wrap_mul(T a, T b) noexcept {
  using U = std::make_unsigned_t<T>;
  return static_cast<T>(static_cast<U>(static_cast<U>(a) * static_cast<U>(b)));
}

// min/max written as selects so GCC turns them into vector blends. For floats a NaN operand
// (either side) gives NaN, as NumPy's minimum/maximum do, so the result does not depend on the
// order of the parents.
template <class T>
MMSB_HD T min_of(T a, T b) noexcept {
  if constexpr (std::is_floating_point_v<T>) {
    return (a < b || a != a) ? a : b;
  } else {
    return a < b ? a : b;
  }
}
template <class T>
MMSB_HD T max_of(T a, T b) noexcept {
  if constexpr (std::is_floating_point_v<T>) {
    return (a > b || a != a) ? a : b;
  } else {
    return a > b ? a : b;
  }
}

/// +inf of the tropical semirings: IEEE infinity, or the integer type's max.
template <class T>
inline constexpr T kPosInf = std::is_floating_point_v<T> ? std::numeric_limits<T>::infinity()
                                                         : std::numeric_limits<T>::max();
/// -inf: IEEE -infinity, or the integer type's min.
template <class T>
inline constexpr T kNegInf = std::is_floating_point_v<T> ? -std::numeric_limits<T>::infinity()
                                                         : std::numeric_limits<T>::lowest();

template <class T>
struct OpsBase {
  using Value = T;
  static constexpr bool kTolerant = false;
  static constexpr bool kTruth = false;
  MMSB_HD static T lift(T a) noexcept { return a; }
};

/// (+, ×, 0, 1); integers wrap.
template <class T>
struct SumProduct : OpsBase<T> {
  static constexpr bool kTolerant = std::is_floating_point_v<T>;
  MMSB_HD static T zero() noexcept { return T{0}; }
  MMSB_HD static T one() noexcept { return T{1}; }
  MMSB_HD static T add(T a, T b) noexcept {
    if constexpr (std::is_integral_v<T>) {
      return wrap_add(a, b);
    } else {
      return a + b;
    }
  }
  MMSB_HD static T mul(T a, T b) noexcept {
    if constexpr (std::is_integral_v<T>) {
      return wrap_mul(a, b);
    } else {
      return a * b;
    }
  }
};

/// (min, +, +inf, 0); integer + saturates at +inf (the absorbing zero), otherwise wraps.
template <class T>
struct MinPlus : OpsBase<T> {
  MMSB_HD static T zero() noexcept { return kPosInf<T>; }
  MMSB_HD static T one() noexcept { return T{0}; }
  MMSB_HD static T add(T a, T b) noexcept { return min_of(a, b); }
  MMSB_HD static T mul(T a, T b) noexcept {
    if constexpr (std::is_integral_v<T>) {
      return (a == kPosInf<T> || b == kPosInf<T>) ? kPosInf<T> : wrap_add(a, b);
    } else {
      return a + b;
    }
  }
};

/// (max, +, -inf, 0); integer + saturates at -inf (the absorbing zero), otherwise wraps.
template <class T>
struct MaxPlus : OpsBase<T> {
  MMSB_HD static T zero() noexcept { return kNegInf<T>; }
  MMSB_HD static T one() noexcept { return T{0}; }
  MMSB_HD static T add(T a, T b) noexcept { return max_of(a, b); }
  MMSB_HD static T mul(T a, T b) noexcept {
    if constexpr (std::is_integral_v<T>) {
      return (a == kNegInf<T> || b == kNegInf<T>) ? kNegInf<T> : wrap_add(a, b);
    } else {
      return a + b;
    }
  }
};

/// (max, min, -inf, +inf).
template <class T>
struct MaxMin : OpsBase<T> {
  MMSB_HD static T zero() noexcept { return kNegInf<T>; }
  MMSB_HD static T one() noexcept { return kPosInf<T>; }
  MMSB_HD static T add(T a, T b) noexcept { return max_of(a, b); }
  MMSB_HD static T mul(T a, T b) noexcept { return min_of(a, b); }
};

/// (or, and, false, true) over any element type: nonzero (NaN included) is true, results are 0/1.
/// Bool pages use std::uint8_t so that a stray byte value other than 0/1 is read without UB.
template <class T>
struct Boolean : OpsBase<T> {
  static constexpr bool kTruth = true;
  MMSB_HD static T zero() noexcept { return T{0}; }
  MMSB_HD static T one() noexcept { return T{1}; }
  MMSB_HD static T lift(T a) noexcept { return static_cast<T>(a != T{0}); }
  MMSB_HD static T add(T a, T b) noexcept { return static_cast<T>((a != T{0}) | (b != T{0})); }
  MMSB_HD static T mul(T a, T b) noexcept { return static_cast<T>((a != T{0}) & (b != T{0})); }
};

/// A validated weight as an element value (check_semiring_weight has accepted it). For integers
/// ±inf (accepted by the tropical semirings only) is the type's max/min.
template <class T>
T weight_as(double w) noexcept {
  if constexpr (std::is_integral_v<T>) {
    if (std::isinf(w)) return w > 0 ? kPosInf<T> : kNegInf<T>;
  }
  return static_cast<T>(w);
}

template <class Ops>
struct Tag {
  using type = Ops;
};

/// Throws Error(InvalidArgument) naming the semiring, the dtype and what is supported.
[[noreturn]] void fail_dtype(SemiringKind s, DType dtype);

/// Calls f(Tag<Ops>{}) with the operations of `s` on `dtype`; fails on an unsupported pair.
/// max_min on bool is boolean (max = or, min = and on {0, 1}), and using Boolean<uint8_t> also
/// makes a stray byte other than 0/1 count as true there.
template <template <class> class Ops, class F>
auto visit_numeric(SemiringKind s, DType dtype, F& f) {
  switch (dtype) {
    case DType::Int32: return f(Tag<Ops<std::int32_t>>{});
    case DType::Int64: return f(Tag<Ops<std::int64_t>>{});
    case DType::Float32: return f(Tag<Ops<float>>{});
    case DType::Float64: return f(Tag<Ops<double>>{});
    case DType::Bool:
      if (s == SemiringKind::Boolean || s == SemiringKind::MaxMin) return f(Tag<Boolean<std::uint8_t>>{});
      break;
    default: break;
  }
  fail_dtype(s, dtype);
}

template <class F>
auto visit_ops(SemiringKind s, DType dtype, F&& f) {
  switch (s) {
    case SemiringKind::SumProduct: return visit_numeric<SumProduct>(s, dtype, f);
    case SemiringKind::MinPlus: return visit_numeric<MinPlus>(s, dtype, f);
    case SemiringKind::MaxPlus: return visit_numeric<MaxPlus>(s, dtype, f);
    case SemiringKind::MaxMin: return visit_numeric<MaxMin>(s, dtype, f);
    case SemiringKind::Boolean: return visit_numeric<Boolean>(s, dtype, f);
  }
  fail_dtype(s, dtype);
}

}  // namespace mmsb::semiring_detail
