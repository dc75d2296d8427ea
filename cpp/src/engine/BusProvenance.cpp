// Bus: events and provenance. Events are queued under the commit lock and delivered after it;
// provenance reads a per-page lsn index that commits feed cheaply (see Bus::pending_).
#include <algorithm>
#include <array>
#include <deque>
#include <limits>
#include <set>
#include <unordered_set>

#include "Transaction.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/engine/Bus.hpp"

namespace mmsb {

namespace {
constexpr std::array<std::string_view, kEventKindCount> kEventNames = {
    "page_created", "page_deleted", "delta_applied", "page_changed", "page_stale", "checkpoint", "tick"};
}  // namespace

std::string_view event_kind_name(EventKind k) noexcept { return kEventNames[static_cast<std::size_t>(k)]; }

EventKind parse_event_kind(std::string_view name) {
  for (std::size_t i = 0; i < kEventNames.size(); ++i) {
    if (kEventNames[i] == name) return static_cast<EventKind>(i);
  }
  fail(ErrorCode::InvalidArgument, "unknown event kind '", name,
       "'; expected page_created, page_deleted, delta_applied, page_changed, page_stale, checkpoint or tick");
}

void Bus::emit_locked(EventKind kind, PageId page, Lsn lsn, Epoch epoch) {
  if ((event_mask_ & (1u << static_cast<unsigned>(kind))) == 0) return;
  events_.push_back({kind, page, lsn, epoch});
}

namespace {
// Buses this thread is delivering events of: a handler that commits to the same bus must not
// wait for the delivery it runs inside; the outer delivery loop picks its events up.
thread_local std::vector<const Bus*> t_delivering;
}  // namespace

std::unique_lock<std::mutex> Bus::lock_delivery() {
  if (std::find(t_delivering.begin(), t_delivering.end(), this) != t_delivering.end()) return {};
  std::unique_lock d(deliver_mutex_, std::try_to_lock);
  if (!d.owns_lock()) {
    // The delivering thread may need what this one holds (Python's GIL) to finish.
    void* state = blocking_.enter != nullptr ? blocking_.enter() : nullptr;
    d.lock();
    if (blocking_.leave != nullptr) blocking_.leave(state);
  }
  return d;
}

void Bus::set_event_sink(EventSink sink, std::uint32_t mask) {
  const std::unique_lock d = lock_delivery();
  auto lock = lock_mutex();
  sink_ = std::move(sink);
  event_mask_ = sink_ ? mask : 0;
  note_delivery_due_locked();
  if (event_mask_ == 0) {
    events_.clear();
    for (auto& t : parked_) t->start.events = 0;  // their undo must not grow the queue back
  }
}

void Bus::deliver_events() {
  await_durable();  // acknowledge (return, deliver) only what is durable
  if (!delivery_due_.load(std::memory_order_relaxed)) return;
  // Inside this thread's own delivery: its loop takes the events.
  if (std::find(t_delivering.begin(), t_delivering.end(), this) != t_delivering.end()) return;
  {
    // One deliverer at a time, so events reach the sink in the order they were queued. Another
    // thread delivering takes these events after its own, in order: waiting for it instead would
    // stall this call behind its handlers, and deadlock when a handler waits for this thread.
    auto lock = lock_mutex();
    if (delivering_) return;
    delivering_ = true;
  }
  struct Done {
    Bus& bus;
    bool looked_last = false;  // delivering_ was cleared at the last look at the queue
    ~Done() {
      t_delivering.pop_back();
      if (looked_last) return;
      auto lock = bus.lock_mutex();  // the sink threw: later commits deliver what is left
      bus.delivering_ = false;
    }
  };
  const std::unique_lock d = lock_delivery();  // set_event_sink may hold it, briefly
  t_delivering.push_back(this);
  Done done{*this};
  for (;;) {
    std::vector<BusEvent> batch;
    EventSink sink;
    {
      auto lock = lock_mutex();
      release_durable_locked();
      // Events of parked commits wait for their sync (a failed one takes them back).
      const std::size_t n = txn_ || !sink_ ? 0 : parked_.empty() ? events_.size() : parked_.front()->start.events;
      if (n == 0) {  // a transaction delivers at commit; parked events after their sync
        delivering_ = false;
        done.looked_last = true;
        return;
      }
      if (n == events_.size()) {
        batch.swap(events_);
      } else {
        batch.assign(events_.begin(), events_.begin() + static_cast<std::ptrdiff_t>(n));
        events_.erase(events_.begin(), events_.begin() + static_cast<std::ptrdiff_t>(n));
        for (auto& t : parked_) t->start.events -= n;
      }
      sink = sink_;
    }
    counters_.events.fetch_add(batch.size(), std::memory_order_relaxed);
    sink(batch);
  }
}

const ParentLists::List* Bus::kept_parents_locked(Derivation* d, std::span<const std::pair<PageId, Epoch>> inputs) {
  const auto named = [&](const std::vector<PageId>& parents) {
    return std::equal(parents.begin(), parents.end(), inputs.begin(), inputs.end(),
                      [](PageId p, const std::pair<PageId, Epoch>& in) { return p == in.first; });
  };
  if (d != nullptr && named(d->parents)) return kept_parents_locked(*d);
  std::vector<PageId> ids(inputs.size());
  std::transform(inputs.begin(), inputs.end(), ids.begin(), [](const auto& in) { return in.first; });
  return parent_lists_.intern(ids);
}

// The index holds one entry per epoch of a page since it began (entries[i] made epoch
// first_epoch + i), so the epoch before `lsn` counts the entries below it. A page with no entries
// has not changed since: its epoch now. A page without a slot had its record released by gc()
// (its entries, if any, tell its epochs; without any it was never written) or comes from a
// crafted log (recovery checks the inputs it replays): epoch 0, which provenance does not follow.
Epoch Bus::parent_epoch_locked(PageId page, Lsn lsn) {
  const auto h = index_.find(page);
  if (h == index_.end()) {
    const PageRecord* r = table_.slot_if_any(page);
    return r == nullptr ? 0 : r->epoch.load(std::memory_order_relaxed);
  }
  const std::vector<IndexEntry>& v = h->second.entries;
  const auto below = std::lower_bound(v.begin(), v.end(), lsn, [](const IndexEntry& e, Lsn l) { return e.lsn < l; });
  return h->second.first_epoch + static_cast<Epoch>(below - v.begin()) - 1;
}

std::vector<std::pair<PageId, Epoch>> Bus::derived_inputs_locked(Lsn lsn) {
  std::vector<std::pair<PageId, Epoch>> inputs;
  const auto in = std::lower_bound(derived_.begin(), derived_.end(), lsn,
                                   [](const DerivedEntry& x, Lsn l) { return x.lsn < l; });
  if (in != derived_.end() && in->lsn == lsn) {
    for (PageId p : *in->parents) inputs.emplace_back(p, parent_epoch_locked(p, lsn));
    return inputs;
  }
  const auto f = std::lower_bound(frozen_.begin(), frozen_.end(), lsn,
                                  [](const FrozenEntry& x, Lsn l) { return x.lsn < l; });
  if (f != frozen_.end() && f->lsn == lsn) {
    inputs.assign(frozen_items_.begin() + static_cast<std::ptrdiff_t>(f->begin),
                  frozen_items_.begin() + static_cast<std::ptrdiff_t>(f->begin + f->count));
  }
  return inputs;
}

// Folds queued index entries into index_, in lsn order. A page first seen here started at the
// epoch its record has now minus the entries it gets (pages restored from a checkpoint start
// past epoch 0). A page without a record had it released by gc() (release_dead_records), which
// only a bus without a log does: there every page began at epoch 0 and every delta was queued.
void Bus::catch_up_index_locked() {
  if (pending_runs_.empty()) return;
  settle_locked();  // parked commits' undo marks point into the queues emptied here
  std::vector<PageId> fresh;
  auto add = [&](PageId page, const IndexEntry& e) {
    auto [it, inserted] = index_.try_emplace(page);
    if (inserted) fresh.push_back(page);
    std::vector<IndexEntry>& v = it->second.entries;
    const std::size_t cap = v.capacity();
    v.push_back(e);
    index_capacity_bytes_ += (v.capacity() - cap) * sizeof(IndexEntry);
  };
  std::size_t p = 0;
  for (const PendingRun& r : pending_runs_) {
    for (std::uint64_t i = 0; i < r.count; ++i) {
      add(pending_pages_[p++], {r.first_lsn + i, r.timestamp_ns, r.source});
    }
  }
  for (PageId page : fresh) {
    PageHistory& h = index_[page];
    const PageRecord* r = table_.slot_if_any(page);
    h.first_epoch = r == nullptr ? 1 : r->epoch.load(std::memory_order_relaxed) + 1 - h.entries.size();
  }
  pending_runs_.clear();
  pending_pages_.clear();
}

// A run takes the entries when they continue it (the next lsns, the same timestamp and source):
// a wave's propagated deltas, a batch right after it. The page ids go in first, so a failure
// leaves the runs as they were and the ids past them unused (undo marks trim both).
void Bus::queue_index_locked(std::span<const PageId> pages, Lsn first, std::uint64_t timestamp_ns, Source source) {
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint32_t>::max();
  if (pages.empty()) return;
  const std::size_t pages_before = pending_pages_.size();
  const std::size_t runs_before = pending_runs_.size();
  const std::uint32_t count_before = pending_runs_.empty() ? 0 : pending_runs_.back().count;
  if (pages.size() == 1) {
    pending_pages_.push_back(pages.front());  // deque's range insert costs more for one
  } else {
    pending_pages_.insert(pending_pages_.end(), pages.begin(), pages.end());
  }
  try {
    for (std::uint64_t done = 0; done < pages.size();) {
      const Lsn lsn = first + done;
      const std::uint64_t left = pages.size() - done;
      if (!pending_runs_.empty() && pending_runs_.back().continued_by(lsn, timestamp_ns, source)) {
        PendingRun& r = pending_runs_.back();
        const auto n = static_cast<std::uint32_t>(std::min(left, kMax - r.count));
        r.count += n;
        done += n;
        continue;
      }
      const auto n = static_cast<std::uint32_t>(std::min(left, kMax));
      pending_runs_.push_back({lsn, timestamp_ns, n, source});
      done += n;
    }
  } catch (...) {
    truncate_index_queue_locked(pages_before, runs_before, count_before);
    throw;
  }
}

void Bus::truncate_index_queue_locked(std::size_t pages, std::size_t runs, std::uint32_t last_count) noexcept {
  pending_pages_.resize(pages);  // shrinking: no allocation
  pending_runs_.resize(runs);
  if (runs != 0) pending_runs_.back().count = last_count;
}

// Each page keeps its newest entry at or below the floor: it produced the page's bytes in the
// oldest retained checkpoint, which time travel can still reach.
void Bus::trim_index_locked(Lsn floor) {
  if (floor <= index_floor_) return;  // nothing new fell out of the retention since last time
  index_floor_ = floor;
  unindexed_through_ = std::max(unindexed_through_, floor);
  catch_up_index_locked();
  const auto newest_at_floor = [&](auto& v) {
    const auto above = std::find_if(v.begin(), v.end(), [&](const IndexEntry& e) { return e.lsn > floor; });
    return above == v.begin() ? v.end() : std::prev(above);
  };
  std::vector<Lsn> kept_derived;  // propagated deltas at or below the floor still indexed
  for (const auto& [page, h] : index_) {
    const auto keep = newest_at_floor(h.entries);
    if (keep != h.entries.end() && keep->source == Source::Propagation) kept_derived.push_back(keep->lsn);
  }
  std::sort(kept_derived.begin(), kept_derived.end());
  const auto kept = [&](Lsn lsn) { return std::binary_search(kept_derived.begin(), kept_derived.end(), lsn); };
  // The inputs of those kept below the floor are copied out while their parents' older entries,
  // which give their epochs, are still there.
  std::vector<FrozenEntry> frozen;
  std::vector<std::pair<PageId, Epoch>> items;
  for (const FrozenEntry& e : frozen_) {
    if (!kept(e.lsn)) continue;
    frozen.push_back({e.lsn, items.size(), e.count});
    items.insert(items.end(), frozen_items_.begin() + static_cast<std::ptrdiff_t>(e.begin),
                 frozen_items_.begin() + static_cast<std::ptrdiff_t>(e.begin + e.count));
  }
  decltype(derived_) entries(derived_.get_allocator());
  for (const DerivedEntry& e : derived_) {
    if (e.lsn > floor) {
      entries.push_back(e);
    } else if (kept(e.lsn)) {
      frozen.push_back({e.lsn, items.size(), e.parents->size()});
      for (PageId p : *e.parents) items.emplace_back(p, parent_epoch_locked(p, e.lsn));
    }
  }
  // In place before any index entry goes: an allocation failure below then leaves some pages
  // trimmed and others not, each of which still gives every kept delta's inputs.
  derived_.swap(entries);
  frozen_.swap(frozen);
  frozen_items_.swap(items);
  for (auto& [page, h] : index_) {
    std::vector<IndexEntry>& v = h.entries;
    const auto keep = newest_at_floor(v);
    if (keep == v.end() || keep == v.begin()) continue;
    std::vector<IndexEntry> rest(keep, v.end());
    index_capacity_bytes_ += rest.capacity() * sizeof(IndexEntry);
    index_capacity_bytes_ -= v.capacity() * sizeof(IndexEntry);
    h.first_epoch += static_cast<Epoch>(keep - v.begin());
    v.swap(rest);
  }
  drop_unused_parent_lists_locked();
}

// Parent lists no propagated delta still indexed and no derivation refers to.
void Bus::drop_unused_parent_lists_locked() {
  std::unordered_set<const ParentLists::List*> used;
  for (const DerivedEntry& e : derived_) used.insert(e.parents);
  for (auto& [id, d] : derivations_) used.insert(d.kept_parents);
  parent_lists_.retain([&](const ParentLists::List* l) { return used.count(l) != 0; });
}

std::vector<ProvenanceStep> Bus::provenance(PageId id, std::optional<Epoch> epoch, unsigned max_depth) {
  auto lock = lock_turn();
  check_open();
  check_no_transaction("provenance()");
  if (id == 0 || id >= table_.next_id()) fail(ErrorCode::PageNotFound, "no page with id ", id, " ever existed on this bus");
  catch_up_index_locked();
  // A reopened bus indexes the log after the checkpoint it came from: the older log, when it is
  // all there, is read once (as history() does) the first time an answer lies in it.
  bool read_older = false;
  const auto index_older_log = [&] {
    if (read_older || !log_ || (unindexed_through_ == 0 && log_->indexed_from_start())) return false;
    read_older = true;
    try {
      index_whole_log_locked();
    } catch (const Error& e) {
      if (e.code() != ErrorCode::HistoryUnavailable) throw;  // a retention removed its start
      return false;
    }
    return true;
  };
  const auto entry_of = [&](PageId page, Epoch e) -> const IndexEntry* {
    for (int pass = 0; pass < 2; ++pass) {
      const auto h = index_.find(page);
      if (h != index_.end() && e >= h->second.first_epoch && e - h->second.first_epoch < h->second.entries.size()) {
        return &h->second.entries[e - h->second.first_epoch];
      }
      if (pass == 0 && !index_older_log()) break;
    }
    return nullptr;
  };
  // The page's epoch now: from its record, or for a page deleted before the checkpoint a reopened
  // bus came from (which has no record of it), its last indexed delta.
  Epoch now = 0;
  if (const PageRecord* r = table_.slot_if_any(id)) {
    now = r->epoch.load(std::memory_order_relaxed);
  } else {
    index_older_log();
    const auto h = index_.find(id);
    if (h != index_.end() && !h->second.entries.empty()) {
      now = h->second.first_epoch + h->second.entries.size() - 1;
    } else if (logging()) {
      fail(ErrorCode::HistoryUnavailable, "page ", id, " was deleted before the checkpoint this bus was opened ",
           "from, and this bus holds no log before that checkpoint");
    }  // else gc() released the record of a page never written: epoch 0
  }
  const Epoch root = epoch.value_or(now);
  if (root > now) fail(ErrorCode::InvalidArgument, "page ", id, " has not reached epoch ", root, " (it is at epoch ", now, ")");
  std::vector<ProvenanceStep> out;
  // Breadth-first over (page, epoch, depth); a DAG may reach one node by several paths.
  struct Item {
    PageId page;
    Epoch epoch;
    unsigned depth;
  };
  std::vector<Item> queue{{id, root, 0}};
  std::set<std::pair<PageId, Epoch>> seen;
  for (std::size_t q = 0; q < queue.size(); ++q) {
    const Item it = queue[q];
    if (it.epoch == 0) continue;  // all zeros at creation: nothing produced it
    const IndexEntry* e = entry_of(it.page, it.epoch);
    if (e == nullptr) {
      // An input older than the history kept is listed without a node, as one at epoch 0.
      if (q != 0) continue;
      fail(ErrorCode::HistoryUnavailable, "epoch ", it.epoch, " of page ", it.page, " is older than the history ",
           "this bus holds (a retention removed it, or this bus was opened from a checkpoint after it and holds no ",
           "log before that checkpoint)");
    }
    ProvenanceStep step{it.page, it.epoch, e->lsn, e->source, e->timestamp_ns, {}};
    step.inputs = derived_inputs_locked(e->lsn);
    if (it.depth < max_depth) {
      for (const auto& [parent, parent_epoch] : step.inputs) {
        if (seen.insert({parent, parent_epoch}).second) {
          queue.push_back({parent, parent_epoch, it.depth + 1});
        }
      }
    }
    out.push_back(std::move(step));
  }
  return out;
}

}  // namespace mmsb
