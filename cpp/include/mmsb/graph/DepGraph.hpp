#pragma once
/// DepGraph: the dependency graph between pages. Directed edges parent -> child, each with a kind.
///
/// Invariants: the graph is acyclic at all times; at most one edge per (parent, child) pair; no
/// self-loops. Insertion keeps an online topological order (Pearce–Kelly), so a cycle check
/// touches only the nodes between the two endpoints in that order, never the whole graph. The
/// canonical order (topological, ties broken by the smaller page id) is a pure function of the
/// edge set and drives propagation waves, so the order of derived deltas does not depend on the
/// order in which edges were inserted (or restored). It is cached as order keys with gaps:
/// changes that only add, move or drop a sink (the usual depend()) or a node without other edges
/// update it in O(in-degree + log n) amortized, without shifting the nodes after it; other
/// changes invalidate it, and the next query recomputes it (Kahn, O(n log n)).
/// A node exists while it has at least one edge.
///
/// Thread safety: none; the Bus calls it under its commit lock. Every mutating call is all or
/// nothing: when it throws, the graph is exactly as before.
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mmsb/core/Types.hpp"

namespace mmsb {

/// `data`: the child is recomputed from its parents; `control`: the child is only
/// invalidated/notified; `device_sync`: the child is kept a copy of its parent.
enum class EdgeKind : std::uint8_t { Data = 1, Control = 2, DeviceSync = 3 };

/// "data", "control", "device_sync".
std::string_view edge_kind_name(EdgeKind k) noexcept;
/// Inverse of edge_kind_name; throws Error(InvalidArgument) listing the kinds.
EdgeKind parse_edge_kind(std::string_view name);

struct Edge {
  PageId parent = 0;
  PageId child = 0;
  EdgeKind kind = EdgeKind::Data;
  bool operator==(const Edge&) const = default;
};

/// What the whole-graph validator found.
struct GraphReport {
  bool ok = true;                             ///< no cycles and no dangling edges
  std::uint64_t nodes = 0;
  std::uint64_t edges = 0;
  std::vector<std::vector<PageId>> cycles;    ///< one per strongly connected component > 1 node
  std::vector<Edge> dangling;                 ///< edges with an endpoint that is not a live page
  std::vector<PageId> order;                  ///< canonical topological order (empty if cyclic)
};

class DepGraph {
 public:
  DepGraph();
  ~DepGraph();
  DepGraph(const DepGraph&) = delete;
  DepGraph& operator=(const DepGraph&) = delete;

  /// Inserts parent -> child. Throws Error(GraphCycle) with the cycle in the message ("adding
  /// edge 7 -> 3 would close the cycle 3 -> 5 -> 7 -> 3"; a self-loop is the cycle "4 -> 4"; the
  /// middle of a very long cycle is elided), also for the reverse of an existing edge;
  /// Error(Graph) if an edge parent -> child already exists; Error(InvalidArgument) for id 0.
  /// Graph unchanged on throw.
  void add_edge(PageId parent, PageId child, EdgeKind kind);
  /// The path child -> ... -> parent that an edge parent -> child would close into a cycle
  /// (for a self-loop: {parent}); empty if the edge is safe. Does not modify the graph.
  std::vector<PageId> find_cycle(PageId parent, PageId child) const;
  /// Removes the edge parent -> child; false (nothing changed) if there is none.
  bool remove_edge(PageId parent, PageId child);
  /// Replaces the child's `data` in-edges by edges from `parents`, in this order (its other
  /// in-edges stay). All or nothing: Error(GraphCycle) if any would close a cycle, Error(Graph)
  /// for a duplicate parent or a parent already linked to the child by another kind.
  void set_data_parents(PageId child, std::span<const PageId> parents);
  /// Removes every edge into and out of `id` (a deleted page).
  void remove_node(PageId id);

  bool contains(PageId id) const noexcept;
  std::optional<EdgeKind> edge_kind(PageId parent, PageId child) const noexcept;
  /// In-edges of `child` by parent id: a function of the edge set alone, so the same after a
  /// checkpoint or reopen restored the edges in another order.
  std::vector<Edge> in_edges(PageId child) const;
  /// Out-edges of `parent` by child id.
  std::vector<Edge> out_edges(PageId parent) const;
  /// Parents in insertion order (set_data_parents order for data edges).
  std::vector<PageId> parents(PageId child) const;
  std::vector<PageId> children(PageId parent) const;
  bool has_children(PageId id) const noexcept;
  /// Calls fn(child, kind) for each out-edge of `parent` without allocating.
  void for_each_child(PageId parent, const std::function<void(PageId, EdgeKind)>& fn) const;
  /// Every edge: children in increasing id, each child's in-edges by parent id (a function of
  /// the edge set, so two buses with the same edges compare equal whatever their history).
  std::vector<Edge> edges() const;

  /// Canonical topological order of every node (Kahn; ready nodes taken smallest id first).
  std::vector<PageId> topological_order() const;
  /// The order key of `id`: keys increase along topological_order() but leave gaps, and change
  /// when the graph does. nullopt if `id` has no edges.
  std::optional<std::uint32_t> order_key(PageId id) const;
  /// The node at order key `key`, or 0 for a gap; Error(InvalidArgument) unless key < key_bound().
  PageId at_key(std::uint32_t key) const;
  /// Every order key is below it; at most a small multiple of node_count() (plus 64).
  std::uint32_t key_bound() const;
  /// Whole-graph check (Tarjan's strongly connected components, iterative): cycles, edges whose
  /// endpoints `is_live` rejects, and the canonical order. Never throws for a bad graph.
  GraphReport validate(const std::function<bool(PageId)>& is_live) const;

  std::uint64_t node_count() const noexcept;
  std::uint64_t edge_count() const noexcept;
  /// Heap bytes held (adjacency, indices, cached order).
  std::uint64_t memory_bytes() const noexcept;
  void clear() noexcept;

 private:
  friend class Wave;  // schedules children by their cached order keys, without a lookup each
  struct Impl;
  Impl* impl_;
};

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
  std::vector<std::uint64_t> bits_;  // one bit per order key
  std::uint32_t cursor_ = 0;         // no set bit in the words before it
  std::uint64_t pending_ = 0;
  std::uint32_t floor_ = 0;          // one past the last popped key: pushes must not go below
  void push_position(std::uint32_t pos, std::uint32_t node);
  [[noreturn, gnu::cold]] void fail_push(std::uint32_t pos, std::uint32_t node) const;
  void push_children_of(std::uint32_t slot, const std::function<void(PageId)>& on_control);
  std::uint32_t next_position();     // the first scheduled order key (pending_ > 0)
  void take(std::uint32_t pos) noexcept;  // unschedules pos == next_position()
};

}  // namespace mmsb
