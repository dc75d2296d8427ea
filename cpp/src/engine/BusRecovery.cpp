// Bus: opening a directory. Recovery restores the newest valid checkpoint and replays the log
// tail through the same apply paths as commits (BusCommit.cpp), so replayed bytes and epochs are
// the committed ones.
#include "mmsb/engine/Bus.hpp"

#include "DevicePages.hpp"
#include "Transaction.hpp"

#include <algorithm>
#include <limits>

#include "mmsb/core/Error.hpp"

namespace mmsb {

void Bus::recover_locked(std::optional<Lsn> until, bool split_transactions, const ProgressFn& progress) {
  RecoveredLog& rec = log_->recovered();
  const Lsn base = rec.checkpoint ? rec.checkpoint->lsn : 0;
  if (rec.checkpoint) restore_checkpoint_locked(*rec.checkpoint, "'" + path_ + "'");
  lsn_.store(base, std::memory_order_relaxed);
  recovery_.checkpoint_lsn = base;
  recovery_.log_last_lsn = rec.last_lsn;
  unindexed_through_ = base;  // the provenance index gets only the lsns replayed below
  const Lsn stop = until.value_or(std::numeric_limits<Lsn>::max());
  ReplayMeter meter(progress, base, std::min(stop, rec.last_lsn));
  for (const SegmentScan& seg : rec.segments) {
    replay_.legacy = seg.header.version < logfmt::kStaleMarksVersion;
    replay_.unscoped_waves = seg.header.version < logfmt::kScopedWavesVersion;
    replay_.skip_lists = seg.header.version >= logfmt::kSkippedWavesVersion;
    for (const ScannedRecord& r : seg.records) {
      if (!replay_record_locked(r, "segment '" + seg.path + "' record at byte " + std::to_string(r.offset), base,
                                stop, split_transactions)) {
        break;
      }
      meter.reached(r.header.first_lsn + r.header.lsn_count - 1);
    }
  }
  meter.finish();
  if (until && *until > rec.last_lsn) {
    fail(ErrorCode::HistoryUnavailable, "lsn ", *until, " is past the end of the log of '", path_,
         "' (last lsn ", rec.last_lsn, ")");
  }
  recovery_.truncated_tail = rec.truncated_tail;
  recovery_.tail_reason = rec.tail_reason;
  check_recovered_places_locked();
  mark_unsettled_stale_locked();
}

void Bus::restore_checkpoint_locked(const CheckpointData& cp, const std::string& of) {
  for (const PageImage& img : cp.pages) {
    const std::uint8_t place = recovered_place_locked(img.create.id, img.create.spec.name, img.create.spec.location);
    try {
      table_.restore(img.create.id, img.create.spec, img.data, img.epoch, img.last_lsn, place);
    } catch (const Error& e) {
      fail(ErrorCode::LogCorrupt, "checkpoint at lsn ", cp.lsn, " of ", of, ": page ", img.create.id,
           " cannot be restored: ", e.what());
    }
  }
  try {
    table_.reserve_ids_below(cp.next_page_id);
  } catch (const Error& e) {
    fail(ErrorCode::LogCorrupt, "checkpoint at lsn ", cp.lsn, " of ", of, ": next page id ", cp.next_page_id,
         " cannot be restored: ", e.what());
  }
  try {
    restore_graph_locked(cp.graph);
  } catch (const Error& e) {
    fail(ErrorCode::LogCorrupt, "checkpoint at lsn ", cp.lsn, " of ", of, ": its graph cannot be restored: ", e.what());
  }
}

// One logged record during recovery or time travel: skipped if the checkpoint at `base` covers
// it; false (stop) once it starts past `stop`. Time travel into the middle of a record: a
// batch's rows are separate deltas, so its first rows apply (also in a transaction record of that
// one batch); a transaction is all or nothing, unless `split` asks for the exact prefix of its
// changes (the state after one delta: Page.at).
bool Bus::replay_record_locked(const ScannedRecord& r, const std::string& where, Lsn base, Lsn stop, bool split) {
  const Lsn first = r.header.first_lsn;
  const Lsn last = first + r.header.lsn_count - 1;
  const bool transaction = r.header.type == logfmt::RecordType::Transaction;
  // A record of no lsn changes nothing the next one depends on, but a malformed one is damage
  // here as it is to inspect and verify: it is read like the others.
  if (r.header.lsn_count != 0) {
    if (last <= base) return true;  // covered by the checkpoint
    if (first > stop) return false;
    if (first <= base) {
      fail(ErrorCode::LogCorrupt, where, " spans lsns ", first, "..", last, " across the checkpoint at lsn ", base);
    }
  }
  // Every op of a record read is decoded and checked, a transaction's one at a time as they are
  // applied (all of them decoded at once take about 10 times the record's bytes when they are
  // small). A failure part way fails the replay, whose half-built bus is dropped.
  std::vector<OpFrame> frames;
  LogRecord single;
  if (transaction) {
    frames = frame_record(r.header, r.body, where);
  } else {
    single = decode_record(r.header, r.body, where);
  }
  const std::size_t ops = transaction ? frames.size() : 1;
  const auto decoded = [&](std::size_t k) { return transaction ? decode_op(frames[k], where) : std::move(single.ops[0]); };
  const auto check_rest = [&](std::size_t from) {
    for (std::size_t k = from; transaction && k < ops; ++k) decoded(k);
  };
  if (r.header.lsn_count == 0) {
    check_rest(0);
    return true;
  }
  // A transaction holding one batch and nothing else is entered mid-way like a batch record: it
  // is how a batch is logged where its apply may fail after the record is written (device rows
  // under group commit), and its rows are separate deltas either way.
  const bool lone_batch = transaction && ops == 1 &&
                          (frames[0].type == logfmt::RecordType::PackedBatch || frames[0].type == logfmt::RecordType::Batch);
  if (last > stop && transaction && !split && !lone_batch) {
    check_rest(0);
    return false;
  }
  replay_.legacy_seen |= replay_.legacy;
  // Each change replays in the propagation mode it was committed in, so that it marks or seeds
  // what the commit did: the mode the next Wave op of its record names (an eager change always
  // has its wave after it), else deferred. Before format 4 the log holds no waves. Only a
  // transaction holds Wave ops.
  std::vector<PropagationMode> modes(ops, PropagationMode::Eager);
  if (!replay_.legacy) {
    PropagationMode mode = PropagationMode::Deferred;
    for (std::size_t i = ops; i-- > 0;) {
      if (transaction && frames[i].type == logfmt::RecordType::Wave) {
        mode = std::get<WaveOp>(decode_op(frames[i], where)).deferred ? PropagationMode::Deferred : PropagationMode::Eager;
      }
      modes[i] = mode;
    }
  }
  struct Replaying {
    Bus& bus;
    PropagationMode mode;
    ~Replaying() {
      bus.propagation_ = mode;
      bus.replay_.active = false;
      bus.replay_.derived.clear();
      bus.replay_.skipped.clear();
    }
  } replaying{*this, propagation_};
  replay_.active = true;
  Lsn lsn = first;
  // A decoding error names the op itself; one applying it is corruption at its lsn.
  const auto apply = [&](auto&& step) {
    try {
      step();
    } catch (const Error& e) {
      // The log is fine; this machine lacks the device, or the memory its pages need.
      if (e.code() == ErrorCode::DeviceUnavailable || e.code() == ErrorCode::OutOfMemory) throw;
      fail(ErrorCode::LogCorrupt, where, " (lsn ", lsn, ") cannot be replayed: ", e.what());
    }
  };
  for (std::size_t k = 0; k < ops; ++k) {
    LogOp op = decoded(k);
    if (lsn > stop && op_lsn_count(op) != 0) {  // a Wave op without an lsn goes with the change before it
      check_rest(k + 1);
      break;
    }
    if (auto* batch = std::get_if<BatchOp>(&op); batch != nullptr && lsn + batch->page_ids.size() - 1 > stop) {
      const std::size_t keep = stop - lsn + 1;
      std::uint64_t bytes = 0;
      for (std::size_t i = 0; i < keep; ++i) bytes += batch->lengths[i];
      batch->page_ids.resize(keep);
      batch->offsets.resize(keep);
      batch->lengths.resize(keep);
      batch->payload = batch->payload.first(bytes);
    }
    propagation_ = modes[k];
    apply([&] { replay_op_locked(op, lsn); });
    lsn += op_lsn_count(op);
  }
  apply([&] { settle_cut_locked(); });
  lsn_.store(lsn - 1, std::memory_order_relaxed);
  ++recovery_.records_replayed;
  return true;
}

// Replay applies exactly what the commit path applied, without validating against the user's
// expectations (expect_epoch) or logging again; anything inconsistent is corruption.
void Bus::replay_op_locked(const LogOp& op, Lsn lsn) {
  if (const auto* c = std::get_if<PageCreateOp>(&op)) {
    // Ids only grow; a gap is an id used by a page of a rolled-back transaction.
    if (c->id < table_.next_id()) {
      fail(ErrorCode::LogCorrupt, "page creation with id ", c->id, " but ids up to ", table_.next_id() - 1,
           " are already used");
    }
    table_.reserve_ids_below(c->id);
    const std::uint8_t place = recovered_place_locked(c->id, c->spec.name, c->spec.location);
    table_.create(c->spec, place).last_lsn.store(lsn, std::memory_order_relaxed);
  } else if (const auto* moved = std::get_if<LocationOp>(&op)) {
    PageRecord& r = table_.get(moved->id);
    const PageInfo* info = table_.info(moved->id);
    const std::uint8_t place = recovered_place_locked(moved->id, info != nullptr ? info->name : "", moved->location);
    relocate_locked(r, place, moved->location, {});
  } else if (const auto* d = std::get_if<PageDeleteOp>(&op)) {
    if (graph_.has_children(d->id)) fail(ErrorCode::LogCorrupt, "page ", d->id, " deleted while it has dependents");
    table_.erase(d->id);
    drop_from_graph_locked(d->id);
  } else if (const auto* m = std::get_if<MetadataOp>(&op)) {
    table_.get(m->id);
    if (m->value) {
      table_.info_for_update(m->id).metadata.insert_or_assign(m->key, *m->value);
    } else {
      table_.info_for_update(m->id).metadata.erase(m->key);
    }
  } else if (std::holds_alternative<DeltaOp>(op) || std::holds_alternative<DerivedOp>(op)) {
    const auto* derived = std::get_if<DerivedOp>(&op);
    Delta delta = derived != nullptr ? derived->delta : std::get<DeltaOp>(op).delta;
    PageRecord& r = table_.get(delta.page_id());
    if (delta.extent() > r.size) fail(ErrorCode::LogCorrupt, "delta past the end of page ", r.id);
    if (derived != nullptr) check_derived_inputs_locked(r.id, derived->inputs, lsn);
    apply_delta_locked(r, delta, lsn);
    if (derived != nullptr) {
      // The parents' epochs it was computed from: the child's memo, and its provenance.
      Derivation* child = derivations_.get(r.id);
      note_derived_locked(lsn, kept_parents_locked(child, derived->inputs));
      if (child != nullptr) {
        child->memo.clear();
        for (const auto& in : derived->inputs) child->memo.push_back(in.second);
      }
      if (!replay_.legacy) replay_.derived.insert(r.id);  // for the wave its Wave op repeats
    } else if (!replay_.legacy && has_dependents_locked(r.id)) {
      note_changed_locked(r.id);  // as record_delta_locked: seeds its wave or marks stale
    }
  } else if (const auto* b = std::get_if<BatchOp>(&op)) {
    // Rows checked as they are applied: a bad one fails the open (or the time travel), whose
    // half-built bus is dropped. Notes the changed pages as a commit does.
    apply_batch_locked(b->view(), lsn, b->timestamp_ns, {}, false);
    if (replay_.legacy) clear_changed_locked();  // derived pages come from their logged deltas
  } else if (const auto* w = std::get_if<WaveOp>(&op)) {
    if (w->wave && !replay_.legacy) replay_wave_locked(*w, lsn);
    replay_.derived.clear();
  } else if (const PageId redefined = replay_graph_op_locked(op); redefined != 0 && !replay_.legacy) {
    redefined_locked(redefined);
  }
}

// Marks and memos as the commit left them, no recompute. The pages the live wave could not
// recompute (their Python function missing) are named, since replay has no callables at all:
// each must be a derived page of a callable that the wave reaches without a Derived delta.
void Bus::replay_wave_locked(const WaveOp& wave, Lsn lsn) {
  const auto corrupt = [&](auto&&... why) {
    fail(ErrorCode::LogCorrupt, "the wave at lsn ", lsn, " ", why...);
  };
  if (!wave.skipped.empty() && !replay_.skip_lists) corrupt("names skipped pages, which its format version cannot");
  for (PageId id : wave.skipped) {
    const Derivation* d = table_.find(id) != nullptr ? derivations_.get(id) : nullptr;
    if (d == nullptr || d->fn.kind != RecomputeKind::Callable) {
      corrupt("names page ", id, " as skipped for a missing Python function, which it does not recompute with one");
    }
    if (replay_.derived.count(id) != 0) corrupt("names page ", id, " as skipped, which it recomputed");
  }
  replay_.skipped.insert(wave.skipped.begin(), wave.skipped.end());
  replay_.skipped_reached = 0;
  run_wave_locked(wave.propagate);
  replay_.skipped.clear();
  if (replay_.skipped_reached != wave.skipped.size()) {
    corrupt("names ", wave.skipped.size() - replay_.skipped_reached, " skipped page(s) that it does not reach");
  }
}

// Provenance and memos read a propagated delta's inputs as the parents' epochs it was computed
// from: a crafted record naming anything else would make them contradict the log.
void Bus::check_derived_inputs_locked(PageId child, const std::vector<std::pair<PageId, Epoch>>& inputs, Lsn lsn) {
  const auto corrupt = [&](auto&&... why) {
    fail(ErrorCode::LogCorrupt, "the propagated delta at lsn ", lsn, " to page ", child, " ", why...);
  };
  if (derivations_.get(child) == nullptr) corrupt("has no recompute there");
  for (const auto& [in, epoch] : inputs) {
    const PageRecord* parent = table_.find(in);
    if (parent == nullptr) corrupt("names page ", in, " as an input, which is not a page there");
    if (!graph_.edge_kind(in, child)) corrupt("names page ", in, " as an input, which is not its parent");
    if (const Epoch now = parent->epoch.load(std::memory_order_relaxed); epoch > now) {
      corrupt("names epoch ", epoch, " of page ", in, ", which is at epoch ", now);
    }
  }
}

// A page the log places on a device this process cannot use is kept on the host while replay
// goes on: the log may move it away or delete it later. Only one still there at the end makes
// the bus unopenable here (check_recovered_places_locked).
std::uint8_t Bus::recovered_place_locked(PageId id, const std::string& name, const std::string& location) {
  try {
    return devices_->place(location, history_view_);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::DeviceUnavailable) throw;
    unplaced_.insert_or_assign(id, Unplaced{name, location, e.what()});
    return devices_->place(location, /*host_only=*/true);
  }
}

void Bus::check_recovered_places_locked() {
  for (const auto& [id, u] : unplaced_) {
    const PageInfo* info = table_.find(id) != nullptr ? table_.info(id) : nullptr;
    if (info == nullptr || info->location != u.location) continue;  // deleted, or moved on since
    fail(ErrorCode::DeviceUnavailable, "page ", id, u.name.empty() ? "" : " '", u.name, u.name.empty() ? "" : "'",
         " lives on ", u.location, ", which this process cannot use (", u.why,
         "); open the bus where that device exists, or read its history with mmsb.replay or bus.at, "
         "which keep every page on the host");
  }
  unplaced_.clear();
}

}  // namespace mmsb
