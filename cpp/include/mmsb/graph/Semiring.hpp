#pragma once
/// Semirings (⊕, ⊗, 0, 1) over page element types, and the elementwise reduction kernel that
/// built-in recomputes use: out[i] = ⊕_k (w_k ⊗ parent_k[i]).
///
/// Supported element types: int32, int64, float32, float64 and bool. `boolean` works on every
/// one of them (nonzero is true; results are 0/1); `max_min` works on bool too (where it equals
/// `boolean`); `sum_product`, `min_plus` and `max_plus` need a numeric type. For integers the
/// infinities of the tropical semirings are the type's max/min value and ⊗ = + saturates there
/// (inf + x = inf), and sum_product wraps modulo 2^bits (no undefined behaviour).
/// Thread safety: pure functions.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mmsb/page/DType.hpp"

namespace mmsb {

enum class SemiringKind : std::uint8_t { SumProduct = 1, MinPlus = 2, MaxPlus = 3, MaxMin = 4, Boolean = 5 };
inline constexpr SemiringKind kAllSemirings[] = {SemiringKind::SumProduct, SemiringKind::MinPlus,
                                                 SemiringKind::MaxPlus, SemiringKind::MaxMin,
                                                 SemiringKind::Boolean};

/// Whether `code` is a SemiringKind (checked where one is taken and where one is decoded).
constexpr bool known_semiring(std::uint8_t code) noexcept {
  return code >= static_cast<std::uint8_t>(SemiringKind::SumProduct) && code <= static_cast<std::uint8_t>(SemiringKind::Boolean);
}
/// "sum_product", "min_plus", "max_plus", "max_min", "boolean".
std::string_view semiring_name(SemiringKind s) noexcept;
/// Inverse of semiring_name; throws Error(InvalidArgument) listing the names.
SemiringKind parse_semiring(std::string_view name);
/// Whether `reduce` accepts pages of `dtype` under `s`.
bool semiring_supports(SemiringKind s, DType dtype) noexcept;
/// Throws Error(InvalidArgument) naming the semiring and dtype unless supported.
void check_semiring_dtype(SemiringKind s, DType dtype);
/// Throws Error(InvalidArgument) naming the weight if it cannot be represented exactly in
/// `dtype` (integers must be integral and in range; bool weights must be 0 or 1; NaN never).
/// ±inf is exact for floats, and for integers under min_plus/max_plus/max_min, whose infinities
/// are the type's max/min; a finite weight beyond float32's range is rejected for float32.
void check_semiring_weight(SemiringKind s, DType dtype, double weight);

/// out[i] = ⊕_k (w_k ⊗ parents[k][i]) for i < count (elements, not bytes). Empty `weights`
/// means no weights (each w_k is the ⊗ identity, so out = ⊕_k parents[k]); otherwise
/// weights.size() == parents.size(). No parents gives the ⊕ identity everywhere. `out` may not
/// alias a parent. Vectorised by the compiler (plain loops over one parent at a time).
/// Preconditions (checked by the caller with check_semiring_*): supported dtype, valid weights.
/// Every parent and `out` must be aligned to the element size (page data is 64-byte aligned).
/// Floating point follows IEEE; the floating min/max of min_plus, max_plus and max_min propagate
/// NaN from any parent (as NumPy's minimum/maximum do).
void semiring_reduce(SemiringKind s, DType dtype, std::span<const std::byte* const> parents,
                     std::span<const double> weights, std::byte* out, std::uint64_t count);

/// semiring_reduce for one (semiring, dtype) pair, resolved once: callers that reduce many pages
/// of the same kind (a propagation wave) skip the per-call dispatch. Same contract as
/// semiring_reduce; stateless, callable from any thread.
using SemiringKernel = void (*)(std::span<const std::byte* const> parents, std::span<const double> weights,
                                std::byte* out, std::uint64_t count);
/// The kernel semiring_reduce(s, dtype, ...) runs on this CPU. Throws Error(InvalidArgument) for
/// an unsupported pair, as semiring_reduce does.
SemiringKernel semiring_kernel(SemiringKind s, DType dtype);

/// Result of checking the semiring laws on samples.
struct SemiringLawReport {
  std::uint64_t checks = 0;                 ///< law instances evaluated
  std::vector<std::string> violations;      ///< "associativity of ⊕ fails for (a, b, c) = (...)"
  bool ok() const noexcept { return violations.empty(); }
};
/// Checks associativity and commutativity of ⊕, associativity of ⊗, the identities 0 ⊕ a = a and
/// 1 ⊗ a = a, annihilation 0 ⊗ a = 0 and distributivity of ⊗ over ⊕ on `samples` random triples
/// (seeded by `seed`, values drawn so that exact laws are meaningful: small integers, and for
/// floats dyadic values); exact for min/max/boolean and integers, relative tolerance
/// `float_tolerance` for floating + and ×. Uses the same scalar operations as semiring_reduce.
SemiringLawReport check_semiring_laws(SemiringKind s, DType dtype, std::uint64_t samples, std::uint64_t seed,
                                      double float_tolerance = 1e-9);

}  // namespace mmsb
