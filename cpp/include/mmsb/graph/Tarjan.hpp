#pragma once
/// Strongly connected components (Tarjan), iterative: the depth of the search lives in a heap
/// vector, never on the call stack, so chains of millions of nodes cannot overflow it. The
/// dependency graph's validator uses it; it takes plain adjacency so tests can feed it cyclic
/// graphs that DepGraph itself never holds. Thread safety: pure functions.
#include <cstdint>
#include <span>
#include <vector>

namespace mmsb {

/// Every strongly connected component of the directed graph whose out-edges of node v are
/// `adjacency[v]` (nodes 0 .. adjacency.size()-1; parallel edges and self-loops allowed).
/// Singletons are included. Each component lists its nodes in increasing order; components come
/// in reverse topological order of the condensation: a component is listed after every
/// component it has an edge to. O(V + E) time, O(V) extra memory. Throws
/// Error(InvalidArgument) for an edge target >= adjacency.size().
std::vector<std::vector<std::uint32_t>> strongly_connected_components(
    const std::vector<std::vector<std::uint32_t>>& adjacency);

/// The components that contain a cycle (more than one node, or one node with a self-loop) of a
/// graph in compressed sparse row form: the out-edges of v are targets[offsets[v] ..
/// offsets[v + 1]), so offsets has one entry more than there are nodes. Same order and cost as
/// strongly_connected_components. Throws Error(InvalidArgument) for offsets that are not
/// non-decreasing within targets, or an edge target out of range.
std::vector<std::vector<std::uint32_t>> cyclic_components(std::span<const std::uint32_t> offsets,
                                                          std::span<const std::uint32_t> targets);

}  // namespace mmsb
