// Wave: schedules a propagation wave by the graph's cached order keys (DepGraph::Impl's order),
// one bit per key, so pushes and pops cost O(1) and come out in canonical order.
#include "mmsb/graph/Wave.hpp"

#include <algorithm>
#include <bit>
#include <limits>
#include <new>
#include <optional>

#include "DepGraphImpl.hpp"
#include "mmsb/core/Error.hpp"

namespace mmsb {

using graph_detail::Adj;
using graph_detail::kNone;
using Index = graph_detail::Index;

// A wave that pops this share of the graph's nodes (and at least kMinPopsForChildKeys) has the
// child keys built, unless they are current already: reading them is cheaper per node, and the
// build, O(nodes + edges) once per graph change, is small next to such a wave.
constexpr std::uint64_t kMinPopsForChildKeys = 1024;
constexpr std::uint64_t kChildKeysShare = 4;  // a quarter

Wave::Wave(const DepGraph& graph)
    : graph_(graph),
      build_after_(std::max(kMinPopsForChildKeys, graph.node_count() / kChildKeysShare)),
      bits_((graph.key_bound() + 63) / 64, 0) {
  if (graph.impl_->child_keys.current()) child_keys_ = &graph.impl_->child_keys;
}

void Wave::fail_push(std::uint32_t pos) const {
  const graph_detail::CanonicalOrder& order = graph_.impl_->order;
  const PageId id = pos < order.bound() ? order.id_at(pos) : 0;
  if (pos < floor_) {
    fail(ErrorCode::Internal, "page ", id, " (order key ", pos, ") pushed into a wave that already ",
         "popped key ", floor_ - 1, ": it would be visited out of topological order");
  }
  fail(ErrorCode::Internal, "page ", id, " pushed into a wave built before the graph grew");
}

inline void Wave::push_position(std::uint32_t pos) {
  const std::uint32_t word = pos >> 6;
  if (pos < floor_ || word >= bits_.size()) [[unlikely]] fail_push(pos);
  const std::uint64_t bit = std::uint64_t{1} << (pos & 63);
  if ((bits_[word] & bit) != 0) return;
  bits_[word] |= bit;
  ++pending_;
  cursor_ = std::min(cursor_, word);  // pop_batch may have looked past it
}

void Wave::push(PageId id) {
  const std::optional<std::uint32_t> pos = graph_.order_key(id);
  if (!pos) {
    fail(ErrorCode::Graph, "page ", id, " is not a node of the dependency graph (it has no edges), so it has ",
         "no place in a propagation wave");
  }
  push_position(*pos);
}

void Wave::push_children(PageId parent, const std::function<void(PageId)>& on_control) {
  const Index p = graph_.impl_->find(parent);
  if (p != kNone) push_children_of(p, on_control);
}

void Wave::push_children(WaveNode parent, const std::function<void(PageId)>& on_control) {
  push_children_of(parent.slot, on_control);
}

// The canonical order is valid: the constructor built it, and the graph does not change while
// the wave lives.
void Wave::push_children_of(std::uint32_t p, const std::function<void(PageId)>& on_control) {
  if (child_keys_ != nullptr && !child_keys_->has_control(p)) {
    for (std::uint32_t key : child_keys_->keys_of(p)) push_position(key);
    return;
  }
  const DepGraph::Impl& g = *graph_.impl_;
  for (const Adj& a : g.nodes[p].out) {
    if (a.kind == EdgeKind::Control) {
      on_control(g.nodes[a.node].id);
    } else {
      push_position(g.order.key(a.node));
    }
  }
}

inline std::uint32_t Wave::next_position() {
  // Words below cursor_ are empty: pushes only land at or after the last popped position.
  while (bits_[cursor_] == 0) ++cursor_;
  return cursor_ * 64 + static_cast<std::uint32_t>(std::countr_zero(bits_[cursor_]));
}

inline void Wave::take(std::uint32_t pos) noexcept {
  bits_[cursor_] &= bits_[cursor_] - 1;
  --pending_;
  floor_ = pos + 1;
}

PageId Wave::pop() {
  if (pending_ == 0) return 0;
  const std::uint32_t pos = next_position();
  take(pos);
  return graph_.impl_->order.id_at(pos);
}

void Wave::pop_batch(std::vector<WaveNode>& out, std::size_t max_nodes) {
  out.clear();
  const DepGraph::Impl& g = *graph_.impl_;
  std::uint32_t limit = std::numeric_limits<std::uint32_t>::max();  // first child of the batch
  while (pending_ != 0 && (out.empty() || out.size() < max_nodes)) {
    const std::uint32_t pos = next_position();
    if (pos >= limit) break;
    const Index slot = g.order.slot_at(pos);
    out.push_back({g.order.id_at(pos), slot});  // before take: a throw leaves the node scheduled
    take(pos);
    if (child_keys_ != nullptr) {
      if (const auto keys = child_keys_->keys_of(slot); !keys.empty()) limit = std::min(limit, keys.front());
      continue;
    }
    for (const Adj& a : g.nodes[slot].out) limit = std::min(limit, g.order.key(a.node));
    if (++popped_ == build_after_) {
      try {
        child_keys_ = &g.current_child_keys();
      } catch (const std::bad_alloc&) {  // the out-edges serve as well, and nothing was popped twice
      }
    }
  }
}

bool Wave::empty() const noexcept { return pending_ == 0; }

}  // namespace mmsb
