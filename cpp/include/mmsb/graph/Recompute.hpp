#pragma once
/// How a derived page is recomputed from its data parents: a built-in kernel (copy, semiring
/// reduction) or a host-language callable. The spec is what the log stores; a callable itself is
/// never serialized, only its name (so a reopened bus can report which pages wait for it).
#include <cstdint>
#include <string>
#include <string_view>

#include "mmsb/graph/Semiring.hpp"

namespace mmsb {

enum class RecomputeKind : std::uint8_t { Copy = 1, Reduce = 2, Callable = 3 };
/// Whether `code` is a RecomputeKind (checked where one is taken and where one is decoded).
constexpr bool known_recompute_kind(std::uint8_t code) noexcept {
  return code >= static_cast<std::uint8_t>(RecomputeKind::Copy) && code <= static_cast<std::uint8_t>(RecomputeKind::Callable);
}

struct RecomputeSpec {
  RecomputeKind kind = RecomputeKind::Copy;
  SemiringKind semiring = SemiringKind::SumProduct;  ///< used by Reduce only
  std::string name;  ///< Callable: the function's qualified name (informational)
  bool operator==(const RecomputeSpec&) const = default;
};

/// "copy", "reduce(min_plus)", "callable(module.fn)".
std::string describe(const RecomputeSpec& spec);

}  // namespace mmsb
