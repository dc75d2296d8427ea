#pragma once
/// Bus events: what happened, to which page, at which lsn. The bus queues them while it commits
/// (only the kinds someone subscribed to) and hands them to its sink after the commit, outside the
/// commit lock, in commit order. A rolled-back change produces no event.
#include <cstdint>
#include <string_view>

#include "mmsb/core/Types.hpp"

namespace mmsb {

enum class EventKind : std::uint8_t {
  PageCreated = 0,
  PageDeleted = 1,
  DeltaApplied = 2,  ///< a user (or replayed/remote) delta committed
  PageChanged = 3,   ///< a page's bytes changed by its recompute during a wave
  PageStale = 4,     ///< a page waits for a recompute (deferred mode, control edges, missing callable)
  Checkpoint = 5,
  Tick = 6,
};
inline constexpr int kEventKindCount = 7;

/// "page_created", "page_deleted", "delta_applied", "page_changed", "page_stale", "checkpoint", "tick".
std::string_view event_kind_name(EventKind k) noexcept;
/// Inverse of event_kind_name; throws Error(InvalidArgument) listing the kinds.
EventKind parse_event_kind(std::string_view name);

struct BusEvent {
  EventKind kind = EventKind::DeltaApplied;
  PageId page = 0;   ///< 0 for checkpoint and tick
  Lsn lsn = 0;       ///< the lsn of the change (the covered lsn for a checkpoint)
  Epoch epoch = 0;   ///< the page's epoch after the change
};

}  // namespace mmsb
