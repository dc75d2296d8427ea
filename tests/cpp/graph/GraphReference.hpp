#pragma once
// A deliberately naive model of the dependency graph, the oracle of the randomized DepGraph
// tests: ordered adjacency lists in std::maps, reachability by plain DFS, and the canonical order
// by repeatedly taking the smallest id whose parents are all placed (quadratic, obviously right).
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <utility>
#include <vector>

#include "mmsb/core/Types.hpp"
#include "mmsb/graph/DepGraph.hpp"

namespace mmsb::test {

class RefGraph {
 public:
  using List = std::vector<std::pair<PageId, EdgeKind>>;

  std::optional<EdgeKind> kind(PageId p, PageId c) const {
    auto it = out_.find(p);
    if (it == out_.end()) return std::nullopt;
    for (const auto& [id, k] : it->second) if (id == c) return k;
    return std::nullopt;
  }

  /// Whether a path from -> ... -> to exists (from == to counts).
  bool reaches(PageId from, PageId to) const {
    std::set<PageId> seen{from};
    std::vector<PageId> todo{from};
    while (!todo.empty()) {
      const PageId v = todo.back();
      todo.pop_back();
      if (v == to) return true;
      auto it = out_.find(v);
      if (it == out_.end()) continue;
      for (const auto& [w, k] : it->second) {
        if (seen.insert(w).second) todo.push_back(w);
      }
    }
    return false;
  }

  void add(PageId p, PageId c, EdgeKind k) {
    out_[p].push_back({c, k});
    in_[c].push_back({p, k});
  }

  void remove(PageId p, PageId c) {
    erase_from(out_, p, c);
    erase_from(in_, c, p);
  }

  void remove_node(PageId id) {
    for (const auto& [p, k] : list(in_, id)) erase_from(out_, p, id);
    for (const auto& [c, k] : list(out_, id)) erase_from(in_, c, id);
    in_.erase(id);
    out_.erase(id);
  }

  /// Same contract as DepGraph::set_data_parents, without the checks (the caller made them).
  void set_data_parents(PageId child, const std::vector<PageId>& parents) {
    const std::set<PageId> keep(parents.begin(), parents.end());
    List in;
    std::set<PageId> old;
    for (const auto& [p, k] : list(in_, child)) {
      if (k != EdgeKind::Data) {
        in.push_back({p, k});
        continue;
      }
      old.insert(p);
      if (!keep.contains(p)) erase_from(out_, p, child);
    }
    for (PageId p : parents) {
      in.push_back({p, EdgeKind::Data});
      if (!old.contains(p)) out_[p].push_back({child, EdgeKind::Data});
    }
    in_.erase(child);
    if (!in.empty()) in_[child] = std::move(in);
  }

  std::set<PageId> nodes() const {
    std::set<PageId> out;
    for (const auto& [id, l] : in_) out.insert(id);
    for (const auto& [id, l] : out_) out.insert(id);
    return out;
  }

  std::size_t edge_count() const {
    std::size_t n = 0;
    for (const auto& [id, l] : in_) n += l.size();
    return n;
  }

  /// DepGraph::edges() order: children increasing, each child's in-edges by parent id.
  std::vector<Edge> edges() const {
    std::vector<Edge> out;
    for (const auto& [c, l] : in_) {
      const std::size_t first = out.size();
      for (const auto& [p, k] : l) out.push_back({p, c, k});
      std::sort(out.begin() + static_cast<std::ptrdiff_t>(first), out.end(),
                [](const Edge& x, const Edge& y) { return x.parent < y.parent; });
    }
    return out;
  }

  /// DepGraph::out_edges() order: by child id.
  std::vector<Edge> out_edges(PageId p) const {
    std::vector<Edge> out;
    for (const auto& [c, k] : list(out_, p)) out.push_back({p, c, k});
    std::sort(out.begin(), out.end(), [](const Edge& x, const Edge& y) { return x.child < y.child; });
    return out;
  }

  /// The lexicographically smallest topological order, by brute force.
  std::vector<PageId> smallest_topological_order() const {
    std::set<PageId> left = nodes();
    std::set<PageId> placed;
    std::vector<PageId> order;
    while (!left.empty()) {
      auto ready = std::find_if(left.begin(), left.end(), [&](PageId v) {
        const List& l = list(in_, v);
        return std::all_of(l.begin(), l.end(), [&](const auto& e) { return placed.contains(e.first); });
      });
      if (ready == left.end()) return {};  // cyclic: never expected
      order.push_back(*ready);
      placed.insert(*ready);
      left.erase(ready);
    }
    return order;
  }

 private:
  using Map = std::map<PageId, List>;

  static const List& list(const Map& m, PageId id) {
    static const List kEmpty;
    auto it = m.find(id);
    return it == m.end() ? kEmpty : it->second;
  }

  static void erase_from(Map& m, PageId owner, PageId other) {
    auto it = m.find(owner);
    if (it == m.end()) return;
    auto& l = it->second;
    l.erase(std::remove_if(l.begin(), l.end(), [&](const auto& e) { return e.first == other; }), l.end());
    if (l.empty()) m.erase(it);
  }

  Map in_;   // child -> parents in insertion order
  Map out_;  // parent -> children in insertion order
};

}  // namespace mmsb::test

namespace mmsb {
/// Edges print as "p -> c (kind)" in assertion failures.
inline void PrintTo(const Edge& e, std::ostream* os) {
  *os << e.parent << " -> " << e.child << " (" << edge_kind_name(e.kind) << ")";
}
}  // namespace mmsb
