// DepGraph's public API on top of DepGraph::Impl (DepGraphImpl.hpp): edge changes made all or
// nothing, queries, the Tarjan-based validator, memory accounting. Wave is in Wave.cpp.
#include "mmsb/graph/DepGraph.hpp"

#include <algorithm>
#include <bit>
#include <limits>
#include <string>

#include "DepGraphImpl.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/graph/Tarjan.hpp"

namespace mmsb {

using graph_detail::Adj;
using graph_detail::erase_link;
using graph_detail::kNone;
using graph_detail::Node;
using graph_detail::room_for;
using Index = graph_detail::Index;

namespace {

void check_id(PageId id, PageId parent, PageId child) {
  if (id == 0) {
    fail(ErrorCode::InvalidArgument, "page id 0 is not a page (ids start at 1): edge ", parent, " -> ", child);
  }
}

}  // namespace

std::string_view edge_kind_name(EdgeKind k) noexcept {
  switch (k) {
    case EdgeKind::Data: return "data";
    case EdgeKind::Control: return "control";
    case EdgeKind::DeviceSync: return "device_sync";
  }
  return "data";
}

EdgeKind parse_edge_kind(std::string_view name) {
  for (EdgeKind k : {EdgeKind::Data, EdgeKind::Control, EdgeKind::DeviceSync}) {
    if (edge_kind_name(k) == name) return k;
  }
  fail(ErrorCode::InvalidArgument, "unknown edge kind '", name, "'; expected one of: data, control, device_sync");
}

DepGraph::DepGraph() : impl_(new Impl) {}
DepGraph::~DepGraph() { delete impl_; }

void DepGraph::add_edge(PageId parent, PageId child, EdgeKind kind) {
  impl_->child_keys.invalidate();  // every mutator, even one that throws: simpler than knowing what changed
  check_id(parent, parent, child);
  check_id(child, parent, child);
  Impl& g = *impl_;
  if (parent == child) g.fail_cycle("adding ", parent, child, {parent});
  Index p = g.find(parent), c = g.find(child);
  const bool searched = p != kNone && c != kNone;
  if (searched) {
    if (auto k = g.kind_of(p, c)) {
      fail(ErrorCode::Graph, "an edge ", parent, " -> ", child, " already exists (kind ", edge_kind_name(*k),
           "); remove it first to change its kind");
    }
    if (auto path = g.closing_path(p, c); !path.empty()) g.fail_cycle("adding ", parent, child, path);
  }
  bool made_p = false, made_c = false;
  try {
    p = g.acquire(parent, true, made_p);
    c = g.acquire(child, false, made_c);
    room_for(g.nodes[p].out, 1);
    room_for(g.nodes[c].in, 1);
    g.order_edge(p, c, searched);  // may reorder, which keeps every existing edge ordered: harmless if we throw
  } catch (...) {
    if (made_c) g.release_if_isolated(c);
    if (made_p) g.release_if_isolated(p);
    throw;
  }
  g.nodes[p].out.push_back({c, kind});
  g.nodes[c].in.push_back({p, kind});
  ++g.edge_count;
  // A fresh parent is placed as a node without edges first. Then an edge the canonical order
  // already agrees with keeps it (the smallest order of a set of orders is still the smallest of
  // any subset containing it), and a sink child just moves.
  if (made_p) g.place(p);
  if (made_c) {
    g.place(c);
  } else if (g.canonical_valid && g.order.key(p) > g.order.key(c)) {
    if (g.nodes[c].out.empty()) {
      const Index moved[] = {c};
      g.unplace(moved);
      g.place(c);
    } else {
      g.canonical_valid = false;
    }
  }
}

std::vector<PageId> DepGraph::find_cycle(PageId parent, PageId child) const {
  if (parent == child) return {parent};
  const Index p = impl_->find(parent), c = impl_->find(child);
  if (p == kNone || c == kNone) return {};
  return impl_->closing_path(p, c);
}

bool DepGraph::remove_edge(PageId parent, PageId child) {
  impl_->child_keys.invalidate();
  Impl& g = *impl_;
  const Index p = g.find(parent), c = g.find(child);
  if (p == kNone || c == kNone || !g.kind_of(p, c)) return false;
  erase_link(g.nodes[p].out, c);
  erase_link(g.nodes[c].in, p);
  --g.edge_count;
  // A sink child moves (or goes, left without edges), and so may a parent left without edges:
  // neither releases anything when Kahn pops it, so the others keep their order.
  if (g.nodes[c].out.empty()) {
    Index moved[] = {c, p};
    g.unplace(std::span(moved, g.nodes[p].in.empty() && g.nodes[p].out.empty() ? 2 : 1));
    if (!g.nodes[c].in.empty()) g.place(c);
  } else {
    g.canonical_valid = false;
  }
  g.release_if_isolated(p);
  g.release_if_isolated(c);
  return true;
}

void DepGraph::set_data_parents(PageId child, std::span<const PageId> parents) {
  impl_->child_keys.invalidate();
  Impl& g = *impl_;
  if (child == 0) fail(ErrorCode::InvalidArgument, "page id 0 is not a page (ids start at 1): set_data_parents(0)");
  for (PageId parent : parents) check_id(parent, parent, child);
  std::vector<PageId> sorted(parents.begin(), parents.end());
  std::sort(sorted.begin(), sorted.end());
  if (auto dup = std::adjacent_find(sorted.begin(), sorted.end()); dup != sorted.end()) {
    fail(ErrorCode::Graph, "page ", *dup, " is listed twice among the data parents of page ", child);
  }
  // Check everything before changing anything. New edges all end at `child`, and dropping its
  // old data in-edges changes nothing reachable from it, so each parent is checked on its own
  // against the current graph.
  const std::string what = "setting the data parents of page " + std::to_string(child) + ": ";
  Index c = g.find(child);
  for (PageId parent : parents) {
    if (parent == child) g.fail_cycle(what, parent, child, {parent});
    const Index p = g.find(parent);
    if (p == kNone || c == kNone) continue;
    if (auto k = g.kind_of(p, c); k && *k != EdgeKind::Data) {
      fail(ErrorCode::Graph, "page ", parent, " is already a ", edge_kind_name(*k), " parent of page ", child,
           "; remove that edge before making it a data parent");
    }
    if (auto path = g.closing_path(p, c); !path.empty()) g.fail_cycle(what, parent, child, path);
  }
  if (c == kNone && parents.empty()) return;

  // Phase 1, may throw: create nodes, reserve every list, fix the order. Reordering keeps all
  // existing edges ordered, so only the fresh nodes need undoing.
  std::vector<Index> made, pidx, gone;
  made.reserve(parents.size() + 1);
  pidx.reserve(parents.size());
  try {
    bool fresh = false;
    c = g.acquire(child, false, fresh);
    if (fresh) made.push_back(c);
    for (PageId parent : parents) {
      pidx.push_back(g.acquire(parent, true, fresh));
      if (fresh) made.push_back(pidx.back());
      room_for(g.nodes[pidx.back()].out, 1);
    }
    room_for(g.nodes[c].in, parents.size());
    gone.reserve(g.nodes[c].in.size() + 1);
    for (Index p : pidx) g.order_edge(p, c, false);
  } catch (...) {
    for (auto it = made.rbegin(); it != made.rend(); ++it) g.release_if_isolated(*it);
    throw;
  }

  // Phase 2, cannot throw: relink. A parent that stays keeps its place among its children.
  const std::uint32_t old_parent = g.new_stamps(2), kept = old_parent + 1;
  Node& cn = g.nodes[c];
  for (const Adj& a : cn.in) {
    if (a.kind == EdgeKind::Data) g.mark[a.node] = old_parent;
  }
  for (Index p : pidx) {
    if (g.mark[p] == old_parent) {
      g.mark[p] = kept;
    } else {
      g.nodes[p].out.push_back({c, EdgeKind::Data});
    }
  }
  std::size_t w = 0, old_data = 0;
  for (std::size_t r = 0; r < cn.in.size(); ++r) {
    const Adj a = cn.in[r];
    if (a.kind != EdgeKind::Data) {
      cn.in[w++] = a;
      continue;
    }
    ++old_data;
    if (g.mark[a.node] == old_parent) {
      erase_link(g.nodes[a.node].out, c);
      if (g.nodes[a.node].in.empty() && g.nodes[a.node].out.empty()) gone.push_back(a.node);
      g.release_if_isolated(a.node);
    }
  }
  cn.in.resize(w);
  for (Index p : pidx) cn.in.push_back({p, EdgeKind::Data});
  g.edge_count = g.edge_count - old_data + pidx.size();
  // A sink child moves (or goes); parents it no longer has and nothing else leave, fresh ones
  // come as nodes without edges: none of them releases anything when Kahn pops it.
  if (cn.out.empty()) {
    const bool c_made = !made.empty() && made.front() == c;
    if (!c_made) gone.push_back(c);
    g.unplace(gone);
    for (Index n : made) {
      if (n != c) g.place(n);
    }
    if (!cn.in.empty()) g.place(c);
  } else {
    g.canonical_valid = false;
  }
  g.release_if_isolated(c);
}

void DepGraph::remove_node(PageId id) {
  impl_->child_keys.invalidate();
  Impl& g = *impl_;
  const Index n = g.find(id);
  if (n == kNone) return;
  Node& node = g.nodes[n];
  // A sink, and parents it leaves isolated, pop without releasing anything: the others keep
  // their canonical order without them.
  const bool sink = g.canonical_valid && node.out.empty();
  std::vector<Index> gone;
  if (sink) {
    gone.reserve(node.in.size() + 1);  // before anything changes
    gone.push_back(n);
  }
  for (const Adj& a : node.in) {
    erase_link(g.nodes[a.node].out, n);
    if (sink && g.nodes[a.node].in.empty() && g.nodes[a.node].out.empty()) gone.push_back(a.node);
    g.release_if_isolated(a.node);
  }
  for (const Adj& a : node.out) {
    erase_link(g.nodes[a.node].in, n);
    g.release_if_isolated(a.node);
  }
  g.edge_count -= node.in.size() + node.out.size();
  node.in.clear();
  node.out.clear();
  g.release_if_isolated(n);
  if (sink) {
    g.unplace(gone);
  } else {
    g.canonical_valid = false;
  }
}

bool DepGraph::contains(PageId id) const noexcept { return impl_->index.contains(id); }

std::optional<EdgeKind> DepGraph::edge_kind(PageId parent, PageId child) const noexcept {
  const Index p = impl_->find(parent), c = impl_->find(child);
  if (p == kNone || c == kNone) return std::nullopt;
  return impl_->kind_of(p, c);
}

std::vector<Edge> DepGraph::in_edges(PageId child) const {
  std::vector<Edge> out;
  if (const Index c = impl_->find(child); c != kNone) {
    for (const Adj& a : impl_->nodes[c].in) out.push_back({impl_->nodes[a.node].id, child, a.kind});
  }
  // By parent id: adjacency order depends on history (a checkpoint restores edges in another
  // order), the edge set does not.
  std::sort(out.begin(), out.end(), [](const Edge& x, const Edge& y) { return x.parent < y.parent; });
  return out;
}

std::vector<Edge> DepGraph::out_edges(PageId parent) const {
  std::vector<Edge> out;
  if (const Index p = impl_->find(parent); p != kNone) {
    for (const Adj& a : impl_->nodes[p].out) out.push_back({parent, impl_->nodes[a.node].id, a.kind});
  }
  std::sort(out.begin(), out.end(), [](const Edge& x, const Edge& y) { return x.child < y.child; });
  return out;
}

std::vector<PageId> DepGraph::parents(PageId child) const {
  std::vector<PageId> out;
  if (const Index c = impl_->find(child); c != kNone) {
    for (const Adj& a : impl_->nodes[c].in) out.push_back(impl_->nodes[a.node].id);
  }
  return out;
}

std::vector<PageId> DepGraph::children(PageId parent) const {
  std::vector<PageId> out;
  for_each_child(parent, [&](PageId id, EdgeKind) { out.push_back(id); });
  return out;
}

bool DepGraph::has_children(PageId id) const noexcept {
  const Index n = impl_->find(id);
  return n != kNone && !impl_->nodes[n].out.empty();
}

void DepGraph::for_each_child(PageId parent, const std::function<void(PageId, EdgeKind)>& fn) const {
  const Index p = impl_->find(parent);
  if (p == kNone) return;
  for (const Adj& a : impl_->nodes[p].out) fn(impl_->nodes[a.node].id, a.kind);
}

std::vector<Edge> DepGraph::edges() const {
  const Impl& g = *impl_;
  std::vector<std::pair<PageId, Index>> kids;
  for (Index n = 0; n < g.nodes.size(); ++n) {
    if (!g.nodes[n].in.empty()) kids.emplace_back(g.nodes[n].id, n);
  }
  std::sort(kids.begin(), kids.end());
  std::vector<Edge> out;
  out.reserve(g.edge_count);
  for (const auto& [id, n] : kids) {
    const std::size_t first = out.size();
    for (const Adj& a : g.nodes[n].in) out.push_back({g.nodes[a.node].id, id, a.kind});
    std::sort(out.begin() + static_cast<std::ptrdiff_t>(first), out.end(),
              [](const Edge& x, const Edge& y) { return x.parent < y.parent; });
  }
  return out;
}

std::vector<PageId> DepGraph::topological_order() const {
  impl_->ensure_canonical();
  return impl_->order.ids();
}

std::optional<std::uint32_t> DepGraph::order_key(PageId id) const {
  const Index n = impl_->find(id);
  if (n == kNone) return std::nullopt;
  impl_->ensure_canonical();
  if (!impl_->order.placed(n)) return std::nullopt;  // only on a cyclic graph, which add_edge prevents
  return impl_->order.key(n);
}

PageId DepGraph::at_key(std::uint32_t key) const {
  impl_->ensure_canonical();
  if (key >= impl_->order.bound()) {
    fail(ErrorCode::InvalidArgument, "order key ", key, " is not below the key bound ", impl_->order.bound());
  }
  return impl_->order.id_at(key);
}

std::uint32_t DepGraph::key_bound() const {
  impl_->ensure_canonical();
  return impl_->order.bound();
}

GraphReport DepGraph::validate(const std::function<bool(PageId)>& is_live) const {
  const Impl& g = *impl_;
  const std::size_t slots = g.nodes.size();
  GraphReport r;
  r.nodes = g.index.size();
  r.edges = g.edge_count;
  // Tarjan over the slots in CSR form (free slots are edge-less singletons and drop out).
  std::vector<std::uint32_t> offsets(slots + 1), targets;
  targets.reserve(g.edge_count);
  for (Index n = 0; n < slots; ++n) {
    offsets[n] = static_cast<std::uint32_t>(targets.size());
    for (const Adj& a : g.nodes[n].out) targets.push_back(a.node);
  }
  offsets[slots] = static_cast<std::uint32_t>(targets.size());
  for (const auto& component : cyclic_components(offsets, targets)) {
    std::vector<PageId> ids;
    for (Index n : component) ids.push_back(g.nodes[n].id);
    std::sort(ids.begin(), ids.end());
    r.cycles.push_back(std::move(ids));
  }
  // One is_live call per node, not per edge: it may be a lookup in the page table.
  std::vector<unsigned char> live(slots, 0);
  for (Index n = 0; n < slots; ++n) {
    if (g.nodes[n].id != 0) live[n] = !is_live || is_live(g.nodes[n].id);
  }
  for (Index n = 0; n < slots; ++n) {
    for (const Adj& a : g.nodes[n].in) {
      if (!live[a.node] || !live[n]) r.dangling.push_back({g.nodes[a.node].id, g.nodes[n].id, a.kind});
    }
  }
  std::stable_sort(r.dangling.begin(), r.dangling.end(),
                   [](const Edge& a, const Edge& b) { return a.child < b.child; });
  if (r.cycles.empty()) r.order = topological_order();
  r.ok = r.cycles.empty() && r.dangling.empty();
  return r;
}

std::uint64_t DepGraph::node_count() const noexcept { return impl_->index.size(); }
std::uint64_t DepGraph::edge_count() const noexcept { return impl_->edge_count; }

std::uint64_t DepGraph::memory_bytes() const noexcept {
  const Impl& g = *impl_;
  std::uint64_t bytes = sizeof(Impl) + g.nodes.capacity() * sizeof(Node);
  for (const Node& n : g.nodes) bytes += (n.in.capacity() + n.out.capacity()) * sizeof(Adj);
  bytes += (g.free_slots.capacity() + g.forward.capacity() + g.backward.capacity()) * sizeof(Index);
  bytes += g.mark.capacity() * sizeof(std::uint32_t) + g.stack.capacity() * sizeof(g.stack[0]);
  bytes += g.ords.capacity() * sizeof(std::int64_t) + g.order.memory_bytes() + g.child_keys.memory_bytes();
  // unordered_map (libstdc++): one pointer per bucket, and per element a heap node holding the
  // next pointer and the pair, plus the allocator's header (about one more pointer).
  using Entry = std::unordered_map<PageId, Index>::value_type;
  bytes += g.index.bucket_count() * sizeof(void*) + g.index.size() * (sizeof(Entry) + 2 * sizeof(void*));
  return bytes;
}

void DepGraph::clear() noexcept {
  Impl fresh;
  std::swap(*impl_, fresh);
}

}  // namespace mmsb
