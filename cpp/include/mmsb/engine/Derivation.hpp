#pragma once
/// How one derived page is kept up to date: its data parents (in order), optional weights, the
/// recompute, and the memo signature (the parents' epochs at its last recompute).
#include <functional>
#include <span>
#include <vector>

#include "mmsb/graph/Recompute.hpp"
#include "mmsb/page/Page.hpp"

namespace mmsb {

/// A host-language recompute: fills `out` (staged with the child's current bytes) from the
/// parents' pages, in the order of Derivation::parents; `inputs` holds each parent's bytes as the
/// host reads them (a device page's refreshed mirror: never read a parent's `data` directly). It
/// runs on the committing thread under the bus commit lock and must not call into the bus. Any
/// exception aborts the wave.
using RecomputeCallable = std::function<void(std::span<std::byte> out, std::span<const PageRecord* const> parents,
                                             std::span<const std::byte* const> inputs)>;

struct Derivation {
  RecomputeSpec fn;
  std::vector<PageId> parents;
  std::vector<double> weights;  ///< empty, or one per parent
  std::vector<Epoch> memo;      ///< parents' epochs at the last recompute; empty: never computed
  RecomputeCallable callable;   ///< set for RecomputeKind::Callable once registered
  bool implicit = false;        ///< made by a device_sync edge (a copy of its one parent)

  /// A Callable whose function is not registered in this process (e.g. after mmsb.open).
  bool missing_callable() const noexcept { return fn.kind == RecomputeKind::Callable && !callable; }
};

}  // namespace mmsb
