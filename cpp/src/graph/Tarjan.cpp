// Tarjan's strongly connected components with an explicit frame stack instead of recursion.
#include "mmsb/graph/Tarjan.hpp"

#include <algorithm>
#include <cstddef>
#include <limits>

#include "mmsb/core/Error.hpp"

namespace mmsb {
namespace {

constexpr std::uint32_t kUnseen = std::numeric_limits<std::uint32_t>::max();

// One pass of Tarjan over nodes 0..n-1. `targets_of(v)` yields v's out-edge targets as a span;
// `emit(component)` receives each component (unsorted) as soon as its root closes, which is the
// reverse topological order of the condensation.
template <class TargetsOf, class Emit>
void tarjan(std::uint32_t n, TargetsOf targets_of, Emit emit) {
  struct Frame {
    std::uint32_t node;
    std::uint32_t next;  // index of the next out-edge of `node` to explore
  };
  std::vector<std::uint32_t> index(n, kUnseen);
  std::vector<std::uint32_t> low(n, 0);
  std::vector<unsigned char> on_stack(n, 0);
  std::vector<std::uint32_t> stack;   // Tarjan's node stack
  std::vector<Frame> calls;           // the DFS path: what recursion would keep on the C stack
  std::vector<std::uint32_t> component;
  std::uint32_t counter = 0;

  auto open = [&](std::uint32_t v) {
    index[v] = low[v] = counter++;
    stack.push_back(v);
    on_stack[v] = 1;
    calls.push_back({v, 0});
  };

  for (std::uint32_t root = 0; root < n; ++root) {
    if (index[root] != kUnseen) continue;
    open(root);
    while (!calls.empty()) {
      const std::uint32_t v = calls.back().node;
      const std::span<const std::uint32_t> targets = targets_of(v);
      if (calls.back().next < targets.size()) {
        const std::uint32_t w = targets[calls.back().next++];
        if (index[w] == kUnseen) {
          open(w);
        } else if (on_stack[w] != 0) {
          low[v] = std::min(low[v], index[w]);
        }
        continue;
      }
      // All of v's edges are explored: "return" to the caller, handing it v's low link.
      calls.pop_back();
      if (!calls.empty()) {
        const std::uint32_t caller = calls.back().node;
        low[caller] = std::min(low[caller], low[v]);
      }
      if (low[v] == index[v]) {
        component.clear();
        std::uint32_t w = 0;
        do {
          w = stack.back();
          stack.pop_back();
          on_stack[w] = 0;
          component.push_back(w);
        } while (w != v);
        emit(component);
      }
    }
  }
}

std::uint32_t checked_count(std::size_t n) {
  if (n >= kUnseen) {
    fail(ErrorCode::InvalidArgument, "graph of ", n, " nodes is too large for Tarjan (limit ", kUnseen - 1, ")");
  }
  return static_cast<std::uint32_t>(n);
}

}  // namespace

std::vector<std::vector<std::uint32_t>> strongly_connected_components(
    const std::vector<std::vector<std::uint32_t>>& adjacency) {
  const std::uint32_t n = checked_count(adjacency.size());
  for (std::uint32_t v = 0; v < n; ++v) {
    for (std::uint32_t w : adjacency[v]) {
      if (w >= n) fail(ErrorCode::InvalidArgument, "edge ", v, " -> ", w, " points past the last node ", n - 1);
    }
  }
  std::vector<std::vector<std::uint32_t>> out;
  tarjan(
      n, [&](std::uint32_t v) { return std::span<const std::uint32_t>(adjacency[v]); },
      [&](std::vector<std::uint32_t>& c) {
        std::sort(c.begin(), c.end());
        out.push_back(c);
      });
  return out;
}

std::vector<std::vector<std::uint32_t>> cyclic_components(std::span<const std::uint32_t> offsets,
                                                          std::span<const std::uint32_t> targets) {
  if (offsets.empty()) return {};
  const std::uint32_t n = checked_count(offsets.size() - 1);
  for (std::uint32_t v = 0; v < n; ++v) {
    if (offsets[v] > offsets[v + 1] || offsets[v + 1] > targets.size()) {
      fail(ErrorCode::InvalidArgument, "CSR offsets of node ", v, " ([", offsets[v], ", ", offsets[v + 1],
           ")) are decreasing or run past the ", targets.size(), " targets");
    }
  }
  for (std::size_t e = offsets[0]; e < offsets[n]; ++e) {
    if (targets[e] >= n) {
      fail(ErrorCode::InvalidArgument, "edge target ", targets[e], " points past the last node ", n - 1);
    }
  }
  auto targets_of = [&](std::uint32_t v) { return targets.subspan(offsets[v], offsets[v + 1] - offsets[v]); };
  std::vector<std::vector<std::uint32_t>> out;
  tarjan(n, targets_of, [&](std::vector<std::uint32_t>& c) {
    if (c.size() == 1) {
      // A single node is a cycle only through a self-loop.
      const auto t = targets_of(c[0]);
      if (std::find(t.begin(), t.end(), c[0]) == t.end()) return;
    }
    std::sort(c.begin(), c.end());
    out.push_back(c);
  });
  return out;
}

}  // namespace mmsb
