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

/// Whether `code` is an EdgeKind (checked where one is taken and where one is decoded).
constexpr bool known_edge_kind(std::uint8_t code) noexcept {
  return code >= static_cast<std::uint8_t>(EdgeKind::Data) && code <= static_cast<std::uint8_t>(EdgeKind::DeviceSync);
}
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

}  // namespace mmsb
