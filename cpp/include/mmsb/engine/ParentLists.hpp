#pragma once
/// The parent lists that propagated deltas were computed from, each kept once, so that the
/// provenance entry of a derived delta is a pointer to its list instead of a copy of it.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <set>
#include <span>
#include <vector>

#include "mmsb/core/Types.hpp"

namespace mmsb {

/// A set of page-id lists by content. Invariant: a list's address stays valid until retain()
/// drops it (set nodes never move), and no two lists are equal.
/// Thread safety: none (the bus commit lock).
class ParentLists {
 public:
  using List = std::vector<PageId>;

  /// The kept list equal to `parents`, added if there is none. Throws std::bad_alloc with
  /// nothing changed.
  const List* intern(std::span<const PageId> parents) {
    const auto it = lists_.find(parents);
    if (it != lists_.end()) return &*it;
    const List* added = &*lists_.emplace(parents.begin(), parents.end()).first;
    bytes_ += bytes_of(*added);
    return added;
  }

  /// Drops every list for which `used` is false (none of them may be referred to afterwards).
  void retain(const std::function<bool(const List*)>& used) {
    for (auto it = lists_.begin(); it != lists_.end();) {
      if (used(&*it)) {
        ++it;
      } else {
        bytes_ -= bytes_of(*it);
        it = lists_.erase(it);
      }
    }
  }

  std::size_t size() const noexcept { return lists_.size(); }

  /// Heap bytes held (memory accounting): each list's ids and its set node, roughly.
  std::uint64_t bytes() const noexcept { return bytes_; }

 private:
  // Lexicographic order, comparable with a span so that a lookup copies nothing.
  struct Less {
    using is_transparent = void;
    static bool less(std::span<const PageId> a, std::span<const PageId> b) noexcept {
      return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
    }
    bool operator()(const List& a, const List& b) const noexcept { return less(a, b); }
    bool operator()(const List& a, std::span<const PageId> b) const noexcept { return less(a, b); }
    bool operator()(std::span<const PageId> a, const List& b) const noexcept { return less(a, b); }
  };
  static std::uint64_t bytes_of(const List& l) noexcept {
    return l.capacity() * sizeof(PageId) + sizeof(List) + 4 * sizeof(void*);
  }
  std::set<List, Less> lists_;
  std::uint64_t bytes_ = 0;
};

}  // namespace mmsb
