// DepGraph internals: node slots, the Pearce–Kelly online order that bounds every cycle check to
// the nodes between the two endpoints, and the canonical order (Kahn, smallest id first).
#include "DepGraphImpl.hpp"

#include <string>

#include "mmsb/core/Error.hpp"

namespace mmsb {

using graph_detail::kNone;
using graph_detail::room_for;
using Index = graph_detail::Index;

namespace {

// "c -> ... -> p -> c", the middle elided for long cycles: a message must stay readable.
std::string format_cycle(const std::vector<PageId>& path) {
  constexpr std::size_t kHead = 6, kTail = 5;
  std::string s;
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path.size() > kHead + kTail + 1 && i == kHead) {
      s += "... (" + std::to_string(path.size() - kHead - kTail) + " more) -> ";
      i = path.size() - kTail;
    }
    s += std::to_string(path[i]) + " -> ";
  }
  return s + std::to_string(path.front());
}

}  // namespace

Index DepGraph::Impl::acquire(PageId id, bool as_parent, bool& created) {
  created = false;
  if (Index n = find(id); n != kNone) return n;
  Index n = 0;
  if (!free_slots.empty()) {
    n = free_slots.back();
    index.emplace(id, n);
    free_slots.pop_back();
  } else {
    if (nodes.size() >= kNone - 1) fail(ErrorCode::Graph, "the dependency graph is full (", nodes.size(), " nodes)");
    const std::size_t want = nodes.size() + 1;
    room_for(nodes, 1), room_for(mark, 1), room_for(forward, want), room_for(backward, want);
    room_for(stack, want), room_for(ords, want), room_for(free_slots, want);
    order.reserve_slot();
    index.emplace(id, static_cast<Index>(nodes.size()));
    n = static_cast<Index>(nodes.size());
    nodes.emplace_back();
    mark.push_back(0);
    order.add_slot();
  }
  nodes[n].id = id;
  nodes[n].ord = as_parent ? next_low-- : next_high++;
  created = true;
  return n;
}

void DepGraph::Impl::release_if_isolated(Index n) noexcept {
  Node& node = nodes[n];
  if (node.id == 0 || !node.in.empty() || !node.out.empty()) return;
  index.erase(node.id);
  node = Node{};
  free_slots.push_back(n);  // capacity reserved in acquire
}

// Depth-first search from `from` over out-edges, restricted to orders below ord[target]
// (Pearce–Kelly: nothing above can lead back to target). Collects the visited nodes into
// `forward`; true if target is reachable, and then `path` (if given) is from -> ... -> target.
bool DepGraph::Impl::search_forward(Index from, Index target, std::vector<PageId>* path) const {
  const std::int64_t upper = nodes[target].ord;
  const std::uint32_t s = new_stamps(1);
  forward.clear();
  stack.clear();
  mark[from] = s;
  forward.push_back(from);
  stack.push_back({from, 0});
  while (!stack.empty()) {
    const Index v = stack.back().first;
    const std::vector<Adj>& out = nodes[v].out;
    if (stack.back().second == out.size()) {
      stack.pop_back();
      continue;
    }
    const Index w = out[stack.back().second++].node;
    if (w == target) {
      if (path != nullptr) {
        for (const auto& frame : stack) path->push_back(nodes[frame.first].id);
        path->push_back(nodes[target].id);
      }
      return true;
    }
    if (mark[w] != s && nodes[w].ord < upper) {
      mark[w] = s;
      forward.push_back(w);
      stack.push_back({w, 0});
    }
  }
  return false;
}

// The path child -> ... -> parent that parent -> child would close; empty if none. When the
// orders already agree no path can exist and nothing is visited.
std::vector<PageId> DepGraph::Impl::closing_path(Index p, Index c) const {
  std::vector<PageId> path;
  if (nodes[p].ord > nodes[c].ord) search_forward(c, p, &path);
  return path;
}

// Makes ord[p] < ord[c] for a safe new edge p -> c. Pearce–Kelly: the ancestors of p and the
// descendants of c whose orders lie between the two swap places, keeping their relative order,
// so every other edge stays ordered. Only nodes between ord[c] and ord[p] are visited.
// `searched`: closing_path(p, c) just ran and left the descendants in `forward`.
void DepGraph::Impl::order_edge(Index p, Index c, bool searched) {
  if (nodes[p].ord < nodes[c].ord) return;
  if (!searched) search_forward(c, p, nullptr);  // the caller checked that it does not reach p
  const std::int64_t lower = nodes[c].ord;
  const std::uint32_t s = new_stamps(1);
  backward.clear();
  backward.push_back(p);
  mark[p] = s;
  for (std::size_t k = 0; k < backward.size(); ++k) {
    for (const Adj& a : nodes[backward[k]].in) {
      if (mark[a.node] != s && nodes[a.node].ord > lower) {
        mark[a.node] = s;
        backward.push_back(a.node);
      }
    }
  }
  auto by_ord = [&](Index a, Index b) { return nodes[a].ord < nodes[b].ord; };
  std::sort(forward.begin(), forward.end(), by_ord);
  std::sort(backward.begin(), backward.end(), by_ord);
  ords.clear();
  for (Index n : backward) ords.push_back(nodes[n].ord);
  for (Index n : forward) ords.push_back(nodes[n].ord);
  std::inplace_merge(ords.begin(), ords.begin() + static_cast<std::ptrdiff_t>(backward.size()), ords.end());
  std::size_t i = 0;
  for (Index n : backward) nodes[n].ord = ords[i++];
  for (Index n : forward) nodes[n].ord = ords[i++];
}

// Kahn over the slots, ready nodes taken smallest id first: a pure function of the edge set.
void DepGraph::Impl::ensure_canonical() const {
  if (canonical_valid) return;
  std::vector<std::uint32_t> indegree(nodes.size());
  std::vector<std::pair<PageId, Index>> heap;  // min-heap by id (ids are unique)
  auto later = [](const auto& a, const auto& b) { return a.first > b.first; };
  for (Index n = 0; n < nodes.size(); ++n) {
    indegree[n] = static_cast<std::uint32_t>(nodes[n].in.size());
    if (nodes[n].id != 0 && indegree[n] == 0) heap.emplace_back(nodes[n].id, n);
  }
  std::make_heap(heap.begin(), heap.end(), later);
  std::vector<Index> slots;
  std::vector<PageId> ids;
  slots.reserve(index.size());
  ids.reserve(index.size());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Index n = heap.back().second;
    heap.pop_back();
    slots.push_back(n);
    ids.push_back(nodes[n].id);
    for (const Adj& a : nodes[n].out) {
      if (--indegree[a.node] == 0) {
        heap.emplace_back(nodes[a.node].id, a.node);
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
  }
  child_keys.invalidate();
  order.assign(slots, ids);
  canonical_valid = true;
}

const graph_detail::ChildKeys& DepGraph::Impl::current_child_keys() const {
  if (child_keys.current()) return child_keys;
  child_keys.begin(nodes.size());
  std::vector<std::uint32_t> row;
  for (const Node& n : nodes) {
    row.clear();
    bool control = false;
    for (const Adj& a : n.out) {
      row.push_back(order.key(a.node));
      control = control || a.kind == EdgeKind::Control;
    }
    child_keys.add_row(row, control);
  }
  child_keys.finish();
  return child_keys;
}

void DepGraph::Impl::unplace(std::span<const Index> slots) const noexcept {
  if (!canonical_valid) return;
  for (Index n : slots) order.erase(n);
}

// Kahn pops c at the first step after its last parent where c is the smallest ready id, and the
// node that pops at a step without c is the smallest ready one among the others.
void DepGraph::Impl::place(Index c) const noexcept {
  if (!canonical_valid) return;
  graph_detail::CanonicalOrder::Key from = 0;
  for (const Adj& a : nodes[c].in) from = std::max(from, order.key(a.node) + 1);
  try {
    order.insert_before(order.first_above(from, nodes[c].id), c, nodes[c].id);
  } catch (...) {  // out of memory: the next query runs Kahn again
    canonical_valid = false;
  }
}

void DepGraph::Impl::fail_cycle(std::string_view what, PageId parent, PageId child,
                                const std::vector<PageId>& path) const {
  fail(ErrorCode::GraphCycle, what, "edge ", parent, " -> ", child, " would close the cycle ", format_cycle(path),
       "; the graph is unchanged (remove an edge of that cycle first)");
}

}  // namespace mmsb
