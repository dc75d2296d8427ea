#pragma once
/// Wave: the scheduler of one propagation wave over a DepGraph's canonical order (see the class).
#include <cstdint>
#include <functional>
#include <vector>

#include "mmsb/core/Types.hpp"
#include "mmsb/graph/DepGraph.hpp"

namespace mmsb {
namespace graph_detail {
class ChildKeys;
}

/// A node popped by Wave::pop_batch: its page and its slot in the graph, through which
/// Wave::push_children reaches its children without looking the page up. Valid with its wave.
struct WaveNode {
  PageId id = 0;
  std::uint32_t slot = 0;
};

/// Schedules one propagation wave: nodes pushed in any order come out in canonical topological
/// order, each at most once. Pushing a node whose order key is not after the last popped one is
/// a logic error (the Bus only pushes children of the node being processed, or seeds before
/// the first pop). Cost per push/pop is O(1) plus a scan of one bit per order key per wave.
/// Invalid once the graph changes.
class Wave {
 public:
  explicit Wave(const DepGraph& graph);
  /// Schedules `id`; a second push of the same node is ignored. Throws Error(Graph) if `id` is
  /// not a node of the graph, Error(Internal) on the logic error above or a changed graph.
  void push(PageId id);
  /// Schedules every data and device_sync child of `parent` and calls on_control(child) for each
  /// control child, in out-edge order. Nothing for a page without edges. One lookup for
  /// `parent`; the children are reached by their cached order keys.
  void push_children(PageId parent, const std::function<void(PageId)>& on_control);
  /// The same for a node of the last pop_batch, without the lookup.
  void push_children(WaveNode parent, const std::function<void(PageId)>& on_control);
  /// The next scheduled node, or 0 when the wave is done.
  PageId pop();
  /// Pops the next scheduled node and, after it, every scheduled node (in canonical order) that
  /// comes before the first child of any node popped with it, up to `max_nodes` (at least one)
  /// in all; the rest stay scheduled. No node of such a batch reaches another, and every child
  /// pushed later lies after all of them, so visiting a batch's nodes in any order and then
  /// pushing their children gives the same sequence as pop() one at a time; so does any prefix
  /// of the batch, its children pushed before the rest is visited. Empty `out` when the wave is
  /// done. Throws std::bad_alloc (out) only.
  void pop_batch(std::vector<WaveNode>& out, std::size_t max_nodes);
  bool empty() const noexcept;

 private:
  const DepGraph& graph_;
  // The graph's child keys once current (a wave that has popped a large part of the graph asks
  // for them to be built), else null: children are then read from the out-edges.
  const graph_detail::ChildKeys* child_keys_ = nullptr;
  std::uint64_t popped_ = 0;
  std::uint64_t build_after_;  // pops
  std::vector<std::uint64_t> bits_;  // one bit per order key
  std::uint32_t cursor_ = 0;         // no set bit in the words before it
  std::uint64_t pending_ = 0;
  std::uint32_t floor_ = 0;          // one past the last popped key: pushes must not go below
  void push_position(std::uint32_t pos);
  [[noreturn, gnu::cold]] void fail_push(std::uint32_t pos) const;
  void push_children_of(std::uint32_t slot, const std::function<void(PageId)>& on_control);
  std::uint32_t next_position();     // the first scheduled order key (pending_ > 0)
  void take(std::uint32_t pos) noexcept;  // unschedules pos == next_position()
};

}  // namespace mmsb
