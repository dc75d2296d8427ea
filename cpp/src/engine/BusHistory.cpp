// Bus: reading the past. Time travel (at), history, diff and verify read the log: the files of a
// directory bus, or the in-memory log of an in-memory one. They never change the bus.
#include <algorithm>
#include <cstring>
#include <deque>
#include <limits>

#include "DevicePages.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/engine/Bus.hpp"
#include "mmsb/log/Checkpoint.hpp"
#include "mmsb/log/PosixFile.hpp"

namespace mmsb {
namespace {

[[noreturn]] void fail_no_log(bool read_only) {
  fail(ErrorCode::HistoryUnavailable, read_only ? "this bus is a read-only view of the past and keeps no log of its own"
                                                : "this bus was made with history=False and keeps no log");
}

// Calls fn(lsn, page, source, timestamp_ns, runs, inputs) for each delta of a decoded record with
// lsn in [first, last], in lsn order; `inputs` is null except for a propagated delta. A batch row
// is one run.
template <class Fn>
void for_each_delta(const LogRecord& rec, Lsn first, Lsn last, Fn&& fn) {
  Lsn lsn = rec.first_lsn;
  for (const LogOp& op : rec.ops) {
    if (lsn > last) return;
    if (const auto* b = std::get_if<BatchOp>(&op)) {
      for (std::size_t i = 0; i < b->page_ids.size(); ++i) {
        if (lsn + i < first || lsn + i > last) continue;
        const Run run{b->offsets[i], b->lengths[i]};
        // An empty row has no run, as an empty Delta has none: one canonical run list per change.
        fn(lsn + i, b->page_ids[i], Source::User, b->timestamp_ns, std::span<const Run>(&run, run.length != 0 ? 1 : 0),
           nullptr);
      }
    } else if (lsn >= first) {
      const auto* derived = std::get_if<DerivedOp>(&op);
      const Delta* d = derived != nullptr ? &derived->delta : nullptr;
      if (const auto* user = std::get_if<DeltaOp>(&op)) d = &user->delta;
      if (d != nullptr) {
        fn(lsn, d->page_id(), d->source, d->timestamp_ns, std::span<const Run>(d->run_list()),
           derived != nullptr ? &derived->inputs : nullptr);
      }
    }
    lsn += op_lsn_count(op);
  }
}

[[noreturn]] void index_mismatch(const std::string& where, Lsn lsn, PageId id) {
  fail(ErrorCode::LogCorrupt, where, ": lsn ", lsn, " is not a delta of page ", id, " as the history index says");
}

// Appends page `id`'s deltas at `held` (ascending lsns of record r) to `out`, decoding only them:
// a batch's rows are read from its columns in place, a transaction's other ops are skipped by
// their framing. Epochs count entries, as the page's history starts at lsn 1.
void pick_deltas(const ScannedRecord& r, std::span<const Lsn> held, PageId id, const std::string& where,
                 std::vector<HistoryEntry>& out) {
  Lsn lsn = r.header.first_lsn;
  if (held.back() >= lsn + r.header.lsn_count) index_mismatch(where, held.back(), id);
  std::size_t k = 0;
  for (const OpFrame& op : split_ops(r.header, r.body, where)) {
    if (k == held.size()) return;
    if (op.type == logfmt::RecordType::Batch || op.type == logfmt::RecordType::PackedBatch) {
      logfmt::ByteReader reader(op.body, where);
      const BatchRows rows(op.type, reader);
      for (; k < held.size() && held[k] < lsn + rows.rows(); ++k) {
        const std::uint64_t i = held[k] - lsn;
        if (rows.page(i) != id) index_mismatch(where, held[k], id);
        HistoryEntry e{held[k], out.size() + 1, Source::User, rows.timestamp_ns(), {}};
        if (rows.length(i) != 0) e.runs.push_back(Run{rows.offset(i), rows.length(i)});  // as for_each_delta
        out.push_back(std::move(e));
      }
      lsn += rows.rows();
      continue;
    }
    const std::uint64_t count = op_lsn_count(op, where);
    if (count != 0 && held[k] == lsn) {
      const LogOp decoded = decode_op(op, where);
      const Delta* d = nullptr;
      if (const auto* user = std::get_if<DeltaOp>(&decoded)) d = &user->delta;
      if (const auto* derived = std::get_if<DerivedOp>(&decoded)) d = &derived->delta;
      if (d == nullptr || d->page_id() != id) index_mismatch(where, lsn, id);
      out.push_back({lsn, out.size() + 1, d->source, d->timestamp_ns, d->run_list()});
      ++k;
    }
    lsn += count;
  }
  if (k != held.size()) index_mismatch(where, held[k], id);
}

}  // namespace

std::shared_ptr<Bus> Bus::at(Lsn lsn, bool split_transactions, const ProgressFn& progress) {
  auto lock = lock_turn();
  check_open();
  check_no_transaction("at()");
  if (!logging()) {
    fail(ErrorCode::HistoryUnavailable, read_only_ ? "this bus is itself a read-only view of the past; call at() on the bus it came from"
                                                   : "this bus was made with history=False and keeps no log");
  }
  if (lsn > this->lsn()) {
    fail(ErrorCode::HistoryUnavailable, "lsn ", lsn, " is in the future; the bus is at lsn ", this->lsn());
  }
  BusOptions o;
  o.threads = pool_.threads();
  o.read_only = true;
  o.at_lsn = lsn;
  o.split_transactions = split_transactions;
  if (mem_log_) {
    auto old = std::make_shared<Bus>(std::move(o));
    std::lock_guard old_lock(old->mutex_);
    replay_memory_log_locked(*old, lsn, split_transactions, /*newest=*/true, progress);
    return old;
  }
  log_->flush();  // durability=none: the files must hold what is asked for
  o.path = path_;
  o.progress = progress;
  return std::make_shared<Bus>(std::move(o));
}

void Bus::replay_memory_log_locked(Bus& into, Lsn stop, bool split, bool newest, const ProgressFn& progress) {
  const MemoryLog::Checkpoint* cp = mem_log_->checkpoint_at(newest ? stop : mem_log_->first_lsn() - 1);
  if (cp == nullptr && mem_log_->first_lsn() > 1) {
    fail(ErrorCode::HistoryUnavailable, "lsn ", stop, " is older than the history this bus retains (its oldest ",
         "checkpoint is at lsn ", mem_log_->retained_from(), "; retention keeps ", mem_retention_.value_or(0), ")");
  }
  const Lsn base = cp != nullptr ? cp->lsn : 0;
  if (cp != nullptr) {
    into.restore_checkpoint_locked(decode_checkpoint(FileBytes::borrow(cp->image), "in-memory checkpoint"),
                                   "the in-memory log");
  }
  into.lsn_.store(base, std::memory_order_relaxed);
  into.recovery_.checkpoint_lsn = base;
  into.recovery_.log_last_lsn = mem_log_->last_lsn();
  ReplayMeter meter(progress, base, stop);
  mem_log_->for_each([&](const ScannedRecord& r, const std::string& where) {
    const bool more = into.replay_record_locked(r, where, base, stop, split);
    meter.reached(r.header.first_lsn + r.header.lsn_count - 1);
    return more;
  }, cp);
  meter.finish();
  into.mark_unsettled_stale_locked();
}

// Needs catch_up_index_locked() first. Reads the whole log once: the record index then covers it
// from lsn 1, and the provenance index gets the entries (and propagated inputs) of lsns up to
// unindexed_through_ from it, replacing what it kept of them. Nothing changes if this throws.
void Bus::index_whole_log_locked() {
  const Lsn through = unindexed_through_;
  std::unordered_map<PageId, std::vector<IndexEntry>> older;
  decltype(derived_) derived(derived_.get_allocator());
  log_->index_whole_log([&](const ScannedRecord& r, const std::string& where) {
    if (r.header.first_lsn > through || r.header.lsn_count == 0) return;
    for_each_delta(decode_record(r.header, r.body, where), 1, through,
                   [&](Lsn lsn, PageId page, Source source, std::uint64_t ts, std::span<const Run>,
                       const std::vector<std::pair<PageId, Epoch>>* inputs) {
                     older[page].push_back({lsn, ts, source});
                     if (inputs != nullptr) derived.push_back({lsn, kept_parents_locked(derivations_.get(page), *inputs)});
                   });
  });
  if (through == 0) return;  // only the record index lacked segments
  for (auto& [page, entries] : older) {
    PageHistory& h = index_[page];
    const auto after = std::find_if(h.entries.begin(), h.entries.end(),
                                    [&](const IndexEntry& e) { return e.lsn > through; });
    entries.insert(entries.end(), after, h.entries.end());
    index_capacity_bytes_ += entries.capacity() * sizeof(IndexEntry);
    index_capacity_bytes_ -= h.entries.capacity() * sizeof(IndexEntry);
    h.entries.swap(entries);
    h.first_epoch = 1;
  }
  const auto after = std::upper_bound(derived_.begin(), derived_.end(), through,
                                      [](Lsn l, const DerivedEntry& e) { return l < e.lsn; });
  derived.insert(derived.end(), after, derived_.end());
  derived_.swap(derived);
  // The index covers every lsn now, so every propagated delta's inputs come from it.
  frozen_.clear();
  frozen_items_.clear();
  unindexed_through_ = 0;
  index_floor_ = 0;  // the next gc trims again what the retention no longer keeps
}

std::vector<HistoryEntry> Bus::history(PageId id) {
  auto lock = lock_turn();
  check_open();
  check_no_transaction("history()");
  if (id == 0 || id >= table_.next_id()) {
    fail(ErrorCode::PageNotFound, "no page with id ", id, " ever existed on this bus");
  }
  if (!logging()) fail_no_log(read_only_);
  catch_up_index_locked();
  if (log_ && (unindexed_through_ != 0 || !log_->indexed_from_start())) index_whole_log_locked();
  std::vector<HistoryEntry> out;
  const auto h = index_.find(id);
  if (h == index_.end()) return out;
  std::vector<Lsn> lsns;
  lsns.reserve(h->second.entries.size());
  for (const IndexEntry& e : h->second.entries) lsns.push_back(e.lsn);
  out.reserve(lsns.size());
  const RecordIndex::Visit pick = [&](const ScannedRecord& r, std::span<const Lsn> held, const std::string& where) {
    pick_deltas(r, held, id, where, out);
  };
  if (mem_log_) {
    mem_log_->read_records(lsns, pick);
  } else {
    log_->read_records(lsns, pick);
  }
  return out;
}

std::map<PageId, std::vector<Run>> Bus::diff(Lsn a, Lsn b) {
  auto lock = lock_turn();
  check_open();
  check_no_transaction("diff()");
  if (a > b || b > lsn()) {
    fail(ErrorCode::InvalidArgument, "diff needs lsn_a <= lsn_b <= the bus lsn ", lsn(), "; got ", a, " and ", b);
  }
  if (!logging()) fail_no_log(read_only_);
  std::map<PageId, std::vector<Run>> written;
  if (a == b) return written;
  // Only the records holding lsns a + 1 .. b are read, through the record index (a bus reopened
  // from a checkpoint indexes the older log first, as history() does).
  if (log_ && log_->indexed_from() > a + 1) {
    if (const Lsn kept = log_->retained_from(); kept != 0 && a < kept) {
      fail(ErrorCode::HistoryUnavailable, "lsn ", a + 1, " is older than the history '", path_,
           "' retains (the log after its oldest checkpoint, at lsn ", kept, ")");
    }
    catch_up_index_locked();
    if (unindexed_through_ != 0 || !log_->indexed_from_start()) index_whole_log_locked();
  }
  const RecordIndex::Visit visit = [&](const ScannedRecord& r, std::span<const Lsn>, const std::string& where) {
    for_each_delta(decode_record(r.header, r.body, where), a + 1, b,
                   [&](Lsn, PageId page, Source, std::uint64_t, std::span<const Run> runs,
                       const std::vector<std::pair<PageId, Epoch>>*) {
                     auto& v = written[page];
                     v.insert(v.end(), runs.begin(), runs.end());
                   });
  };
  if (mem_log_) {
    mem_log_->read_records(mem_log_->record_starts(a + 1, b), visit);
  } else {
    log_->read_records(log_->record_starts(a + 1, b), visit);
  }
  for (auto& [page, runs] : written) {  // union: sorted, overlapping and touching runs merged
    std::sort(runs.begin(), runs.end(), [](const Run& x, const Run& y) { return x.offset < y.offset; });
    std::vector<Run> merged;
    for (const Run& r : runs) {
      if (r.length == 0) continue;
      if (!merged.empty() && r.offset <= merged.back().end()) {
        merged.back().length = std::max(merged.back().end(), r.end()) - merged.back().offset;
      } else {
        merged.push_back(r);
      }
    }
    runs = std::move(merged);
  }
  return written;
}

void Bus::compare_pages_locked(Bus& other, const std::string& what, std::vector<std::string>& problems) {
  const std::size_t before = problems.size();
  auto note = [&](PageId id, const std::string& field) {
    if (problems.size() - before < 20) problems.push_back(what + ": page " + std::to_string(id) + " " + field);
  };
  if (other.lsn() != lsn()) {
    problems.push_back(what + " ends at lsn " + std::to_string(other.lsn()) + ", memory at " + std::to_string(lsn()));
  }
  // The live ids of both, merged: ids skipped in between cost nothing (a log may leave a gap).
  std::vector<PageId> ids;
  table_.for_each_live([&](PageRecord& r) { ids.push_back(r.id); });
  const std::size_t mine = ids.size();
  other.table_.for_each_live([&](PageRecord& r) { ids.push_back(r.id); });
  std::inplace_merge(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(mine), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  for (PageId id : ids) {
    PageRecord* a = table_.find(id);
    PageRecord* b = other.table_.find(id);
    if ((a == nullptr) != (b == nullptr)) {
      note(id, a == nullptr ? "exists only in the log" : "exists only in memory");
      continue;
    }
    if (a == nullptr) continue;
    if (a->size != b->size || a->dtype != b->dtype) note(id, "layout differs");
    else if (std::memcmp(devices_->readable(*a), other.devices_->readable(*b), a->size) != 0) note(id, "bytes differ");
    if (a->epoch.load() != b->epoch.load()) {
      note(id, "epoch " + std::to_string(a->epoch.load()) + " in memory, " + std::to_string(b->epoch.load()) + " in the log");
    }
    if (a->last_lsn.load() != b->last_lsn.load()) note(id, "last lsn differs");
    const PageInfo* ia = table_.info(id);
    const PageInfo* ib = other.table_.info(id);
    const PageInfo none;
    const PageInfo& x = ia != nullptr ? *ia : none;
    const PageInfo& y = ib != nullptr ? *ib : none;
    if (x.name != y.name || x.shape != y.shape || x.metadata != y.metadata || x.location != y.location) {
      note(id, "name, shape or metadata differ");
    }
  }
  // The graph: edges, and how each derived page is recomputed (memos may differ: a cutoff
  // updates the memo without logging anything).
  if (graph_.edges() != other.graph_.edges()) problems.push_back(what + ": the dependency graph differs");
  for (const auto& [id, d] : derivations_) {
    auto it = other.derivations_.find(id);
    if (it == other.derivations_.end() || it->second.fn != d.fn || it->second.parents != d.parents ||
        it->second.weights != d.weights) {
      note(id, "recompute (depend) differs");
    }
  }
  if (other.derivations_.size() != derivations_.size()) problems.push_back(what + ": derived page counts differ");
}

IntegrityReport Bus::verify() {
  auto lock = lock_turn();
  check_open();
  check_no_transaction("verify()");
  IntegrityReport rep;
  table_.check_consistency(rep.problems);
  const Lsn now = lsn();
  table_.for_each_live([&](PageRecord& r) {
    ++rep.pages_checked;
    if (r.last_lsn.load() > now) {
      rep.problems.push_back("page " + std::to_string(r.id) + " was last written at lsn " +
                             std::to_string(r.last_lsn.load()) + ", after the bus lsn " + std::to_string(now));
    }
  });
  // A record past the bus lsn was logged but never applied (an apply that failed after its
  // write) or comes from another writer: either way the log and memory disagree. A read-only
  // view may stand at an earlier lsn on purpose.
  const auto ahead = [&](Lsn log_last) {
    if (log_last <= now || read_only_) return;
    rep.problems.push_back("the log holds lsns " + std::to_string(now + 1) + ".." + std::to_string(log_last) +
                           " past the bus lsn " + std::to_string(now) + ", not applied in memory");
  };
  if (mem_log_) {
    rep.log_checked = true;
    ahead(mem_log_->last_lsn());
    try {
      BusOptions o;
      o.threads = pool_.threads();
      o.read_only = true;
      Bus replayed(std::move(o));
      std::lock_guard replayed_lock(replayed.mutex_);
      // From lsn 1, or from the oldest checkpoint the retention kept: as much log as there is.
      replay_memory_log_locked(replayed, now, false, /*newest=*/false, {});
      rep.records_checked = replayed.recovery_.records_replayed;
      compare_pages_locked(replayed, "in-memory log replayed", rep.problems);
    } catch (const Error& e) {
      rep.problems.push_back(e.what());
    }
  } else if (!path_.empty()) {
    rep.log_checked = true;
    if (log_) log_->flush();
    for (bool from_checkpoint : {false, true}) {
      BusOptions o;
      o.threads = pool_.threads();
      o.path = path_;
      o.read_only = true;
      o.at_lsn = now;
      o.use_checkpoints = from_checkpoint;
      try {
        Bus replayed(std::move(o));
        rep.records_checked = std::max(rep.records_checked, replayed.recovery().records_replayed);
        if (from_checkpoint) ahead(replayed.recovery().log_last_lsn);  // the same log in both passes
        if (from_checkpoint && replayed.recovery().checkpoint_lsn == 0) break;  // same as pass one
        compare_pages_locked(replayed, from_checkpoint ? "checkpoint + log" : "log replayed from lsn 1",
                             rep.problems);
      } catch (const Error& e) {
        if (e.code() == ErrorCode::HistoryUnavailable) {
          // With a retention the log no longer starts at lsn 1: only the checkpoint pass applies.
          if (!from_checkpoint) continue;
          // A view of the past whose writer's retention has removed that past since: nothing
          // is damaged, there is just nothing left to check it against.
          if (read_only_) throw;
        }
        rep.problems.push_back(e.what());
      }
    }
    // Recovery skips a damaged checkpoint for an older one (so the pass above may not have read
    // the newest), and the retention may later leave it the only way back: each must read whole.
    for (const std::string& name : list_directory(path_)) {
      std::uint64_t at = 0;
      if (!logfmt::parse_checkpoint_file_name(name, at) || at > now) continue;
      try {
        read_checkpoint(path_ + "/" + name);
      } catch (const Error& e) {
        // Beside a writer, its retention may delete a checkpoint after the listing.
        if (read_only_ && !path_exists(path_ + "/" + name)) continue;
        rep.problems.push_back(e.what());
      }
    }
  }
  rep.ok = rep.problems.empty();
  return rep;
}

}  // namespace mmsb
