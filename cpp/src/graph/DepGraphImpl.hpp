#pragma once
// Internal to the graph layer: the representation behind DepGraph, shared by DepGraph.cpp (the
// public API and Wave) and DepGraphImpl.cpp (slot management, the Pearce–Kelly order and the
// canonical order).
//
// Nodes live in dense slots (uint32 indices, recycled through a free list); a page id maps to its
// slot through an unordered_map. Each slot keeps its in- and out-edges in insertion order and a
// Pearce–Kelly order value `ord` with ord[parent] < ord[child] on every edge. The canonical order
// is cached as keys with gaps (CanonicalOrder); edge changes that keep it valid place or drop
// single nodes in it, others invalidate it until the next query runs Kahn again.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "CanonicalOrder.hpp"
#include "ChildKeys.hpp"
#include "mmsb/graph/DepGraph.hpp"

namespace mmsb {
namespace graph_detail {

using Index = std::uint32_t;
inline constexpr Index kNone = std::numeric_limits<Index>::max();

struct Adj {
  Index node;
  EdgeKind kind;
};

struct Node {
  PageId id = 0;         // 0: a free slot, waiting in Impl::free_slots
  std::int64_t ord = 0;  // Pearce–Kelly order: ord[parent] < ord[child] on every edge
  std::vector<Adj> in;   // parents, insertion order
  std::vector<Adj> out;  // children, insertion order
};

// Room for `extra` more elements with geometric growth (reserve(size + 1) would be quadratic), so
// that the push_backs after the point of no return cannot throw.
template <class V>
void room_for(V& v, std::size_t extra) {
  if (v.capacity() - v.size() < extra) v.reserve(std::max(v.size() + extra, 2 * v.capacity()));
}

inline void erase_link(std::vector<Adj>& list, Index node) noexcept {
  auto it = std::find_if(list.begin(), list.end(), [&](const Adj& a) { return a.node == node; });
  if (it != list.end()) list.erase(it);
}

}  // namespace graph_detail

struct DepGraph::Impl {
  using Index = graph_detail::Index;
  using Node = graph_detail::Node;
  using Adj = graph_detail::Adj;

  std::vector<Node> nodes;
  std::vector<Index> free_slots;
  std::unordered_map<PageId, Index> index;
  std::uint64_t edge_count = 0;
  // Fresh nodes have no edges, so their order is free: parents start below every used order and
  // children above, so that linking a fresh node never needs a reorder.
  std::int64_t next_low = -1;
  std::int64_t next_high = 0;

  // Search scratch, sized with `nodes` so that searches allocate nothing (mutable: find_cycle
  // and the canonical cache are const).
  mutable std::vector<std::uint32_t> mark;  // == stamp: visited by the current search
  mutable std::uint32_t stamp = 0;
  mutable std::vector<Index> forward, backward;
  mutable std::vector<std::pair<Index, std::uint32_t>> stack;  // DFS path: (node, next out-edge)
  mutable std::vector<std::int64_t> ords;

  mutable bool canonical_valid = false;
  mutable graph_detail::CanonicalOrder order;  // valid while canonical_valid
  // Built on demand by large waves; every edge change and every re-run of Kahn invalidates it.
  mutable graph_detail::ChildKeys child_keys;

  Index find(PageId id) const noexcept {
    auto it = index.find(id);
    return it == index.end() ? graph_detail::kNone : it->second;
  }

  std::optional<EdgeKind> kind_of(Index p, Index c) const noexcept {
    // Scan the shorter of the two lists: a hub parent may have thousands of children.
    if (nodes[p].out.size() <= nodes[c].in.size()) {
      for (const Adj& a : nodes[p].out) if (a.node == c) return a.kind;
    } else {
      for (const Adj& a : nodes[c].in) if (a.node == p) return a.kind;
    }
    return std::nullopt;
  }

  // First of `k` consecutive fresh stamp values.
  std::uint32_t new_stamps(std::uint32_t k) const {
    if (stamp > std::numeric_limits<std::uint32_t>::max() - 2 * k) {
      std::fill(mark.begin(), mark.end(), 0u);
      stamp = 0;
    }
    const std::uint32_t first = stamp + 1;
    stamp += k;
    return first;
  }

  // The node for `id`, created (without edges) if needed; `created` says whether it was. Fresh
  // slots reserve room in every scratch vector, so searches and releases never allocate.
  Index acquire(PageId id, bool as_parent, bool& created);
  // Frees the slot of a node that has no edges left (no-op otherwise).
  void release_if_isolated(Index n) noexcept;
  // Depth-first search from `from` over out-edges, restricted to orders below ord[target]
  // (Pearce–Kelly: nothing above can lead back to target). Collects the visited nodes into
  // `forward`; true if target is reachable, and then `path` (if given) is from -> ... -> target.
  bool search_forward(Index from, Index target, std::vector<PageId>* path) const;
  // The path child -> ... -> parent that parent -> child would close; empty if none. When the
  // orders already agree no path can exist and nothing is visited.
  std::vector<PageId> closing_path(Index p, Index c) const;
  // Makes ord[p] < ord[c] for a safe new edge p -> c. Pearce–Kelly: the ancestors of p and the
  // descendants of c whose orders lie between the two swap places, keeping their relative order,
  // so every other edge stays ordered. Only nodes between ord[c] and ord[p] are visited.
  // `searched`: closing_path(p, c) just ran and left the descendants in `forward`.
  void order_edge(Index p, Index c, bool searched);
  // Kahn over the slots, ready nodes taken smallest id first: a pure function of the edge set.
  void ensure_canonical() const;
  // child_keys, rebuilt first if stale (the canonical order must be valid). Throws
  // std::bad_alloc.
  const graph_detail::ChildKeys& current_child_keys() const;
  // Places `c` (not placed) in a valid canonical order of the other placed nodes, when c's
  // parents are all placed and its children are not: Kahn pops such a node without releasing a
  // placed one, so the others keep their order, and c goes after its last parent, before the
  // first later node with a larger id. A sink moves by unplace + place; a fresh parent is placed
  // (as a node without edges) before its child. Out of memory, the order is just invalidated.
  void place(Index c) const noexcept;
  // Drops these slots (sinks or isolated nodes, placed) from the canonical order: Kahn pops them
  // without releasing anything, so the others keep their order.
  void unplace(std::span<const Index> slots) const noexcept;
  // Error(GraphCycle): "<what>edge p -> c would close the cycle c -> ... -> p -> c; ...".
  [[noreturn]] void fail_cycle(std::string_view what, PageId parent, PageId child,
                               const std::vector<PageId>& path) const;
};

}  // namespace mmsb
