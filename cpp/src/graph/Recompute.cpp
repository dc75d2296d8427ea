#include "mmsb/graph/Recompute.hpp"

namespace mmsb {

std::string describe(const RecomputeSpec& spec) {
  switch (spec.kind) {
    case RecomputeKind::Copy:
      return "copy";
    case RecomputeKind::Reduce:
      return "reduce(" + std::string(semiring_name(spec.semiring)) + ")";
    case RecomputeKind::Callable:
      break;
  }
  return "callable(" + spec.name + ")";
}

}  // namespace mmsb
