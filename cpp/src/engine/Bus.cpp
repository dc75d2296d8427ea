#include "mmsb/engine/Bus.hpp"

#include "DevicePages.hpp"
#include "Transaction.hpp"
#include "WaveBatch.hpp"

#include <cstring>
#include <new>

#include "mmsb/core/Clock.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/core/Prefaulter.hpp"
#include "mmsb/delta/BatchApply.hpp"

#include <algorithm>
#include <bit>
#include <limits>

namespace mmsb {

namespace {
std::atomic<std::uint64_t> g_next_instance{1};
}  // namespace

Bus::Bus(BusOptions options)
    : instance_id_(g_next_instance.fetch_add(1, std::memory_order_relaxed)),
      devices_(std::make_unique<DevicePages>(table_)),
      pool_(options.threads),
      path_(std::move(options.path)),
      durability_(options.durability),
      history_view_(options.read_only),
      queue_capacity_(options.queue_capacity == 0 || options.queue_capacity > (std::size_t{1} << 30)
                          ? options.queue_capacity
                          : std::bit_ceil(options.queue_capacity)) {
  if (queue_capacity_ == 0 || queue_capacity_ > (std::size_t{1} << 30)) {
    fail(ErrorCode::InvalidArgument, "queue_capacity must be between 1 and 2^30 submissions; got ", queue_capacity_);
  }
  wave_batch_ = std::make_unique<WaveBatch>();
  if (path_.empty()) {
    // An in-memory bus keeps its log in memory (history, time travel, diff); the read-only buses
    // that time travel builds are filled by replay and keep none.
    if (!options.read_only && options.keep_history) mem_log_ = std::make_unique<MemoryLog>();
    read_only_ = options.read_only;
    if (options.retention && !options.read_only) {
      if (!mem_log_) fail(ErrorCode::InvalidArgument, "retention bounds the history; a bus with history=False keeps none");
      if (*options.retention == 0) fail(ErrorCode::InvalidArgument, "retention must keep at least 1 checkpoint");
      mem_retention_ = options.retention;
    }
    return;
  }
  const Log::Access access = options.read_only    ? Log::Access::ReadOnly
                             : options.must_exist ? Log::Access::Open
                                                  : Log::Access::Create;
  const Lsn checkpoint_limit =
      options.use_checkpoints ? options.at_lsn.value_or(std::numeric_limits<Lsn>::max()) : 0;
  log_ = std::make_unique<Log>(path_, durability_, access, checkpoint_limit, options.progress);
  std::lock_guard lock(mutex_);
  recover_locked(options.at_lsn, options.split_transactions, options.progress);
  if (options.read_only) {
    log_.reset();
    read_only_ = true;
  } else {
    log_->start_writing();
    if (options.retention) {
      if (*options.retention == 0) fail(ErrorCode::InvalidArgument, "retention must keep at least 1 checkpoint");
      log_->set_retention(options.retention);
    }
  }
}

Bus::~Bus() {
  drop_queued();
  delete ring_if_any();
}

// Deletes what is still queued (closing, or destroying, the bus); returns how many there were.
std::uint64_t Bus::drop_queued() noexcept {
  std::vector<Submission*> left;
  if (Ring* r = ring_if_any()) {
    r->close();  // blocked submitters wake up and get Error(Closed)
    try {
      r->drain_all(left);
    } catch (...) {  // cannot grow `left`: leak rather than throw from close or the destructor
    }
  }
  for (Submission* s : left) delete s;
  const std::uint64_t n = left.size() + carry_.size();
  carry_.clear();
  carry_count_.store(0, std::memory_order_relaxed);
  queued_bytes_.store(0, std::memory_order_relaxed);
  return n;
}

void Bus::log_locked(Lsn last, std::span<const std::byte> tail) {
  if (log_) {
    const std::uint64_t ticket = log_->append(record_buf_, last, tail);
    if (ticket == 0) return;
    if (txn_) {
      txn_->ticket = ticket;  // parked once recycled; its committer waits in await_durable()
      return;
    }
    // A commit without undo (create, delete, metadata) applies only once durable: it syncs in
    // place, covering every parked commit before it.
    sync_log_locked();
  } else if (mem_log_) {
    const std::size_t size = record_buf_.size();
    mem_log_->append(record_buf_, last);
    // A large record became history, leaving no buffer. The next record is likely as large
    // (batches and waves repeat): its room now, faulted in on the helper thread while this
    // commit applies, instead of regrowing by doubling through fresh pages.
    // The record is logged already: a failure here must not abort the commit, so no room
    // just means the next record grows as before.
    if (record_buf_.capacity() == 0 && size > 0) {
      try {
        record_buf_.reserve(size);
      } catch (const std::bad_alloc&) {
        return;
      }
      Prefaulter::shared().populate(record_buf_.data(), size);
    }
  }
}

void Bus::recover_locked(std::optional<Lsn> until, bool split_transactions, const ProgressFn& progress) {
  RecoveredLog& rec = log_->recovered();
  const Lsn base = rec.checkpoint ? rec.checkpoint->lsn : 0;
  if (rec.checkpoint) restore_checkpoint_locked(*rec.checkpoint, "'" + path_ + "'");
  lsn_.store(base, std::memory_order_relaxed);
  recovery_.checkpoint_lsn = base;
  unindexed_through_ = base;  // the provenance index gets only the lsns replayed below
  const Lsn stop = until.value_or(std::numeric_limits<Lsn>::max());
  ReplayMeter meter(progress, base, std::min(stop, rec.last_lsn));
  for (const SegmentScan& seg : rec.segments) {
    replay_.legacy = seg.header.version < logfmt::kStaleMarksVersion;
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
  table_.reserve_ids_below(cp.next_page_id);
  try {
    restore_graph_locked(cp.graph);
  } catch (const Error& e) {
    fail(ErrorCode::LogCorrupt, "checkpoint at lsn ", cp.lsn, " of ", of, ": its graph cannot be restored: ", e.what());
  }
}

// One logged record during recovery or time travel: skipped if the checkpoint at `base` covers
// it; false (stop) once it starts past `stop`. Time travel into the middle of a record: a
// batch's rows are separate deltas, so its first rows apply; a transaction is all or nothing,
// unless `split` asks for the exact prefix of its changes (the state after one delta: Page.at).
bool Bus::replay_record_locked(const ScannedRecord& r, const std::string& where, Lsn base, Lsn stop, bool split) {
  const Lsn first = r.header.first_lsn;
  const Lsn last = first + r.header.lsn_count - 1;
  if (r.header.lsn_count == 0 || last <= base) return true;  // covered by the checkpoint
  if (first > stop) return false;
  if (first <= base) {
    fail(ErrorCode::LogCorrupt, where, " spans lsns ", first, "..", last, " across the checkpoint at lsn ", base);
  }
  LogRecord decoded = decode_record(r.header, r.body, where);
  if (last > stop && r.header.type == logfmt::RecordType::Transaction && !split) return false;
  replay_.legacy_seen |= replay_.legacy;
  // Each change replays in the propagation mode it was committed in, so that it marks or seeds
  // what the commit did: the mode the next Wave op of its record names (an eager change always
  // has its wave after it), else deferred. Before format 4 the log holds no waves.
  std::vector<PropagationMode> modes(decoded.ops.size(), PropagationMode::Eager);
  if (!replay_.legacy) {
    PropagationMode mode = PropagationMode::Deferred;
    for (std::size_t i = decoded.ops.size(); i-- > 0;) {
      if (const auto* w = std::get_if<WaveOp>(&decoded.ops[i])) {
        mode = w->deferred ? PropagationMode::Deferred : PropagationMode::Eager;
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
    }
  } replaying{*this, propagation_};
  replay_.active = true;
  Lsn lsn = first;
  try {
    for (std::size_t k = 0; k < decoded.ops.size(); ++k) {
      LogOp& op = decoded.ops[k];
      if (lsn > stop && op_lsn_count(op) != 0) break;  // a Wave op without an lsn goes with the change before it
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
      replay_op_locked(op, lsn);
      lsn += op_lsn_count(op);
    }
    settle_cut_locked();
  } catch (const Error& e) {
    if (e.code() == ErrorCode::DeviceUnavailable) throw;  // the log is fine; this machine lacks the device
    fail(ErrorCode::LogCorrupt, where, " (lsn ", lsn, ") cannot be replayed: ", e.what());
  }
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
    apply_delta_locked(r, delta, lsn);
    if (derived != nullptr) {
      // The parents' epochs it was computed from: the child's memo, and its provenance.
      note_derived_locked(lsn, derived->inputs);
      if (auto it = derivations_.find(r.id); it != derivations_.end()) {
        it->second.memo.clear();
        for (const auto& in : derived->inputs) it->second.memo.push_back(in.second);
      }
      if (!replay_.legacy) replay_.derived.insert(r.id);  // for the wave its Wave op repeats
    } else if (!replay_.legacy && has_dependents_locked(r.id)) {
      note_changed_locked(r.id);  // as record_delta_locked: seeds its wave or marks stale
    }
  } else if (const auto* b = std::get_if<BatchOp>(&op)) {
    // Rows checked as they are applied: a bad one fails the open (or the time travel), whose
    // half-built bus is dropped. Notes the changed pages as a commit does.
    apply_batch_locked(b->view(), lsn, b->timestamp_ns, nullptr, false);
    if (replay_.legacy) clear_changed_locked();  // derived pages come from their logged deltas
  } else if (const auto* w = std::get_if<WaveOp>(&op)) {
    if (w->wave && !replay_.legacy) run_wave_locked(w->propagate);  // marks and memos, no recompute
    replay_.derived.clear();
  } else if (const PageId redefined = replay_graph_op_locked(op); redefined != 0 && !replay_.legacy) {
    redefined_locked(redefined);
  }
}

void Bus::check_open() const {
  if (closed()) fail(ErrorCode::Closed, "the bus is closed; open a new one to continue");
}

void Bus::check_writable() const {
  check_open();
  if (read_only_) {
    fail(ErrorCode::ReadOnly, "this bus is a read-only view of '", path_, "' at lsn ", lsn(),
         "; write through the bus that owns the directory");
  }
}

PageRecord& Bus::live_locked(PageId id) { return table_.get(id); }

std::uint8_t Bus::recovered_place_locked(PageId id, const std::string& name, const std::string& location) {
  try {
    return devices_->place(location, history_view_);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::DeviceUnavailable) throw;
    fail(ErrorCode::DeviceUnavailable, "page ", id, name.empty() ? "" : " '", name, name.empty() ? "" : "'",
         " lives on ", location, ", which this process cannot use (", e.what(),
         "); open the bus where that device exists, or read its history with mmsb.replay or bus.at, "
         "which keep every page on the host");
  }
}

void Bus::count(std::uint64_t deltas, std::uint64_t bytes) noexcept {
  bump(counters_.deltas_applied, deltas);
  bump(counters_.bytes_applied, bytes);
  bump(counters_.commits, 1);
}

PageRecord& Bus::create_page(const PageSpec& spec, std::span<const std::byte> initial) {
  auto lock = lock_turn();
  check_writable();
  const std::uint8_t place = devices_->place(spec.location, false);
  if (!initial.empty() && initial.size() != spec.size) {
    fail(ErrorCode::InvalidArgument, "initial data has ", initial.size(), " bytes but the page has ",
         spec.size);
  }
  // The page is created first (its memory may be refused), then logged: a failed append undoes
  // the creation, so memory and log agree either way. Creation and initial content are one
  // record, so neither survives a crash without the other.
  PageRecord& r = table_.create(spec, place);
  const Lsn create_lsn = lsn_.load(std::memory_order_relaxed) + 1;
  std::optional<Delta> content;
  if (!initial.empty()) {
    content = Delta::at(r.id, 0, initial);
    content->timestamp_ns = wall_clock_ns();
  }
  try {
    if (txn_) {
      // Allocate first, record last: a failure here leaves the transaction as it was.
      reserve_one(txn_->undo);
      TransactionBuilder::Mark mark = txn_->ops.mark();
      txn_->ops.add(PageCreateOp{r.id, spec});
      try {
        if (content) txn_->ops.add(*content);
      } catch (...) {
        txn_->ops.reset(mark);
        throw;
      }
      txn_->undo.emplace_back(UndoCreate{r.id});
    } else if (logging()) {
      record_buf_.clear();
      PageCreateOp op{r.id, spec};
      if (content) {
        const LogOp ops[] = {std::move(op), DeltaOp{*content}};
        encode_transaction_record(record_buf_, create_lsn, ops);
      } else {
        encode_op_record(record_buf_, create_lsn, op);
      }
      log_locked(create_lsn + (content ? 1 : 0));
    }
  } catch (...) {
    table_.discard_newest(r.id);
    throw;
  }
  r.last_lsn.store(create_lsn, std::memory_order_relaxed);
  lsn_.store(create_lsn, std::memory_order_release);
  bump(counters_.pages_created, 1);
  emit_locked(EventKind::PageCreated, r.id, create_lsn, 0);
  if (content) {
    apply_delta_locked(r, *content, create_lsn + 1);
    count(1, content->payload().size());
    emit_locked(EventKind::DeltaApplied, r.id, create_lsn + 1, 1);
  }
  lock.unlock();
  deliver_events();
  return r;
}

void Bus::delete_page(PageId id) {
  auto lock = lock_turn();
  check_writable();
  PageRecord& r = live_locked(id);
  if (graph_.has_children(id)) {
    fail(ErrorCode::Graph, "page ", id, " still has dependents (", graph_.children(id).size(),
         " children); remove their edges (bus.remove_edge) first");
  }
  if (replicated_locked(id)) {
    fail(ErrorCode::InvalidArgument, "page ", id, " is replicated (bus.replicate); detach the replicator ",
         "(bus.replicate(None)) before deleting it");
  }
  const Lsn lsn = lsn_.load(std::memory_order_relaxed) + 1;
  if (txn_ && graph_.contains(id)) {
    txn_->add_heavy(undo_child(id, graph_, derivations_));
  }
  if (txn_) {
    const PageInfo* info = table_.info(id);
    UndoDelete undo{id, info != nullptr ? std::make_unique<PageInfo>(*info) : nullptr};
    txn_->reserve_heavy();
    txn_->ops.add(PageDeleteOp{id});
    PageTable::pin(r);  // rollback brings the page back, bytes included
    txn_->push_heavy(std::move(undo));
  } else if (logging()) {
    record_buf_.clear();
    encode_op_record(record_buf_, lsn, PageDeleteOp{id});
    log_locked(lsn);
  }
  table_.erase(id);
  drop_from_graph_locked(id);
  lsn_.store(lsn, std::memory_order_release);
  bump(counters_.pages_deleted, 1);
  emit_locked(EventKind::PageDeleted, id, lsn, r.epoch.load(std::memory_order_relaxed));
  lock.unlock();
  deliver_events();
}

PageRecord& Bus::page(PageId id) {
  auto lock = lock_turn();
  check_open();
  return live_locked(id);
}

PageId Bus::find_page(std::string_view name) {
  auto lock = lock_turn();
  check_open();
  return table_.find_name(name);
}

PageInfo Bus::page_info(PageId id) {
  auto lock = lock_turn();
  check_open();
  live_locked(id);
  const PageInfo* info = table_.info(id);
  return info != nullptr ? *info : PageInfo{};
}

std::vector<PageId> Bus::page_ids() {
  auto lock = lock_turn();
  check_open();
  std::vector<PageId> ids;
  ids.reserve(table_.live_count());
  table_.for_each_live([&](PageRecord& r) { ids.push_back(r.id); });
  return ids;
}

std::uint64_t Bus::page_count() {
  auto lock = lock_turn();
  check_open();
  return table_.live_count();
}

void Bus::set_metadata(PageId id, const std::string& key, const std::optional<MetaValue>& value) {
  auto lock = lock_turn();
  check_writable();
  live_locked(id);
  if (!value) {
    const PageInfo* info = table_.info(id);
    if (info == nullptr || info->metadata.find(key) == info->metadata.end()) return;
  }
  const Lsn lsn = lsn_.load(std::memory_order_relaxed) + 1;
  if (txn_) {
    std::unique_ptr<MetaValue> old;
    if (const PageInfo* info = table_.info(id)) {
      if (auto it = info->metadata.find(key); it != info->metadata.end()) old = std::make_unique<MetaValue>(it->second);
    }
    UndoMetadata undo{id, key, std::move(old)};
    txn_->reserve_heavy();
    txn_->ops.add(MetadataOp{id, key, value});
    txn_->push_heavy(std::move(undo));
  } else if (logging()) {
    record_buf_.clear();
    encode_op_record(record_buf_, lsn, MetadataOp{id, key, value});
    log_locked(lsn);
  }
  if (!value) {
    table_.info_for_update(id).metadata.erase(key);
  } else {
    table_.info_for_update(id).metadata.insert_or_assign(key, *value);
  }
  lsn_.store(lsn, std::memory_order_release);
}

void Bus::check_delta_locked(const PageRecord& r, const Delta& d) const {
  if (d.extent() > r.size) {
    fail(ErrorCode::InvalidDelta, "delta writes bytes [", d.run_list().back().offset, ", ",
         d.extent(), ") of page ", r.id, ", which has ", r.size, " bytes");
  }
  const Epoch now = r.epoch.load(std::memory_order_relaxed);
  if (d.expect_epoch && *d.expect_epoch != now) {
    fail(ErrorCode::EpochConflict, "page ", r.id, " is at epoch ", now, " but the delta expects epoch ",
         *d.expect_epoch, "; re-read the page and retry");
  }
}

// Every single-delta commit goes through here: validate, log, apply, and its wave (eager mode).
void Bus::commit_delta_locked(PageRecord& r, Delta& d) {
  check_delta_locked(r, d);
  d.timestamp_ns = wall_clock_ns();
  const bool wave = has_dependents_locked(r.id) && propagation_ == PropagationMode::Eager;
  if (!wave && !grouping_locked()) return record_delta_locked(r, d);
  // The wave's recomputes may fail (a callable raising): delta and wave commit as one record.
  // Group commit needs the undo of a transaction even without a wave.
  atomically_locked([&] {
    record_delta_locked(r, d);
    if (wave) run_wave_locked();
  });
}

// A checked delta: logged (or noted in the open transaction), applied, counted; no wave.
void Bus::record_delta_locked(PageRecord& r, Delta& d) {
  const Lsn lsn = lsn_.load(std::memory_order_relaxed) + 1;
  if (txn_) {
    txn_note_delta_locked(r, d);
  } else if (logging()) {
    record_buf_.clear();
    encode_op_record(record_buf_, lsn, d);
    log_locked(lsn);
  }
  apply_delta_locked(r, d, lsn);
  count(1, d.payload().size());
  emit_locked(EventKind::DeltaApplied, r.id, lsn, d.epoch);
  if (has_dependents_locked(r.id)) note_changed_locked(r.id);
}

// A batch with rows on device pages: their old bytes (for the undo) are read and their new
// bytes written in one transfer per device, before anything else changes (a device error then
// leaves the host pages and epochs as they were); host rows are copied here, in row order. Bytes,
// epochs and lsns equal apply_batch's. Returns false, doing nothing, for a batch with no device row.
bool Bus::apply_device_batch_locked(const DeltaBatchView& b, Lsn first, std::byte* save_old) {
  const std::span<const DeviceRow> rows = devices_->device_rows(b);
  if (rows.empty()) return false;
  // Every device row saves the bytes from before the whole batch, not before itself: undo writes
  // each page's rows back newest first, so the oldest row's saved bytes land last either way.
  if (save_old != nullptr) devices_->read(rows, {save_old, b.payload.size()});
  devices_->write(rows, b.payload);
  std::uint64_t pos = 0;
  for (std::size_t i = 0; i < b.rows(); ++i) {
    PageRecord& r = table_.record(b.page_ids[i]);
    const std::uint64_t len = b.lengths[i];
    if (len != 0 && !devices_->on_device(r)) {
      std::byte* dst = r.data + b.offsets[i];
      if (save_old != nullptr) std::memcpy(save_old + pos, dst, len);
      std::memcpy(dst, b.payload.data() + pos, len);
    }
    r.epoch.store(r.epoch.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    r.last_lsn.store(first + i, std::memory_order_relaxed);
    pos += len;
  }
  return true;
}

// The single place where a delta becomes state (commits and replay).
void Bus::apply_delta_locked(PageRecord& r, Delta& d, Lsn lsn) {
  d.lsn = lsn;
  if (devices_->on_device(r)) {
    devices_->write(r, d);
  } else {
    devices_->host_access(r);
    d.apply_to(r.data);
  }
  d.epoch = r.epoch.load(std::memory_order_relaxed) + 1;
  r.epoch.store(d.epoch, std::memory_order_release);
  r.last_lsn.store(lsn, std::memory_order_relaxed);
  lsn_.store(std::max(lsn, lsn_.load(std::memory_order_relaxed)), std::memory_order_release);
  pending_.push_back({r.id, {lsn, d.timestamp_ns, d.source}});
}

// The single place where a batch becomes state (commits and replay).
void Bus::apply_batch_locked(const DeltaBatchView& batch, Lsn first, std::uint64_t timestamp_ns, std::byte* save_old,
                             bool validated) {
  bool applied = false;
  if (validated && devices_->lent()) {
    for (PageId id : batch.page_ids) devices_->host_access(table_.record(id));
  }
  if (devices_->active()) {
    if (!validated) validate_batch(batch, table_);  // device rows are resolved before any is applied
    validated = true;
    applied = apply_device_batch_locked(batch, first, save_old);
  }
  if (!applied && validated) mmsb::apply_batch(batch, table_, first, pool_, save_old);
  if (!applied && !validated) apply_checked_batch(batch, table_, first, pool_);
  pending_batches_.push_back({first, timestamp_ns, {batch.page_ids.begin(), batch.page_ids.end()}});
  if ((event_mask_ & (1u << static_cast<unsigned>(EventKind::DeltaApplied))) != 0) {
    // Each row's epoch: the page's final epoch minus the rows of that page after it.
    std::vector<Epoch> epochs(batch.rows());
    std::unordered_map<PageId, Epoch> next;
    for (std::size_t i = batch.rows(); i-- > 0;) {
      const PageId id = batch.page_ids[i];
      auto it = next.try_emplace(id, table_.record(id).epoch.load(std::memory_order_relaxed)).first;
      epochs[i] = it->second--;
    }
    for (std::size_t i = 0; i < batch.rows(); ++i) emit_locked(EventKind::DeltaApplied, batch.page_ids[i], first + i, epochs[i]);
  }
  if (graph_.edge_count() == 0) return;
  for (std::size_t i = 0; i < batch.rows(); ++i) {
    if (has_dependents_locked(batch.page_ids[i])) note_changed_locked(batch.page_ids[i]);
  }
}

void Bus::apply(Delta& d) {
  const std::uint64_t t0 = monotonic_ns();
  auto lock = lock_turn();
  check_writable();
  commit_delta_locked(live_locked(d.page_id()), d);
  note_commit_latency_locked(t0);
  lock.unlock();
  deliver_events();
}

Epoch Bus::write(PageId id, std::uint64_t offset, std::span<const std::byte> data,
                 std::optional<Epoch> expect_epoch) {
  const std::uint64_t t0 = monotonic_ns();
  auto lock = lock_turn();
  check_writable();
  PageRecord& r = live_locked(id);
  if (offset > r.size) {  // an empty write has no run to check, but its offset must still be valid
    fail(ErrorCode::InvalidDelta, "write at offset ", offset, " is past the end of page ", id, " (",
         r.size, " bytes)");
  }
  Delta d = Delta::at(id, offset, data);
  d.expect_epoch = expect_epoch;
  commit_delta_locked(r, d);
  note_commit_latency_locked(t0);
  lock.unlock();
  deliver_events();
  return d.epoch;
}

bool Bus::update(PageId id, std::span<const std::byte> content, std::optional<Epoch> expect_epoch) {
  const std::uint64_t t0 = monotonic_ns();
  auto lock = lock_turn();
  check_writable();
  PageRecord& r = live_locked(id);
  if (content.size() != r.size) {
    fail(ErrorCode::InvalidArgument, "new content has ", content.size(), " bytes but page ", id,
         " has ", r.size);
  }
  Delta d = Delta::diff(id, {devices_->readable(r), r.size}, content);
  d.expect_epoch = expect_epoch;
  return commit_diff(lock, r, d, t0);
}

bool Bus::commit_diff(std::unique_lock<std::mutex>& lock, PageRecord& r, Delta& d, std::uint64_t t0) {
  check_delta_locked(r, d);
  if (d.empty()) return false;
  commit_delta_locked(r, d);
  note_commit_latency_locked(t0);
  lock.unlock();
  deliver_events();
  return true;
}

Lsn Bus::apply_batch(const DeltaBatchView& batch) {
  const std::uint64_t t0 = monotonic_ns();
  auto lock = lock_turn();
  check_writable();
  validate_batch(batch, table_, &pool_);
  if (batch.rows() == 0) return lsn_.load(std::memory_order_relaxed);
  bool wave = false;
  if (propagation_ == PropagationMode::Eager && graph_.edge_count() != 0) {
    for (std::size_t i = 0; i < batch.rows() && !wave; ++i) wave = has_dependents_locked(batch.page_ids[i]);
  }
  Lsn last = 0;
  if (wave || grouping_locked()) {
    atomically_locked([&] {
      last = record_batch_locked(batch);
      if (wave) run_wave_locked();
    });
  } else {
    last = record_batch_locked(batch);
  }
  note_commit_latency_locked(t0);
  lock.unlock();
  deliver_events();
  return last;
}

// A validated batch: logged (or noted in the open transaction), applied, counted; no wave.
Lsn Bus::record_batch_locked(const DeltaBatchView& batch) {
  const Lsn first = lsn_.load(std::memory_order_relaxed) + 1;
  const Lsn last = first + batch.rows() - 1;
  const std::uint64_t ts = wall_clock_ns();
  std::byte* undo = nullptr;
  if (txn_) {
    undo = txn_note_batch_locked(batch, ts);
  } else if (log_) {
    // The file log writes the payload from the caller's buffer: megabytes not copied twice.
    record_buf_.clear();
    encode_batch_record_head(record_buf_, first, batch, ts);
    log_locked(last, batch.payload);
  } else if (logging()) {
    record_buf_.clear();
    encode_op_record(record_buf_, first, batch, ts);
    log_locked(last);
  }
  lsn_.store(last, std::memory_order_release);  // before the stale marks, which carry it
  apply_batch_locked(batch, first, ts, undo);
  count(batch.rows(), batch.payload.size());
  return last;
}

Epoch Bus::snapshot(PageId id, std::span<std::byte> out) {
  auto lock = lock_turn();
  check_open();
  PageRecord& r = live_locked(id);
  if (out.size() != r.size) {
    fail(ErrorCode::InvalidArgument, "snapshot buffer has ", out.size(), " bytes, page ", id, " has ",
         r.size);
  }
  std::memcpy(out.data(), devices_->readable(r), r.size);
  return r.epoch.load(std::memory_order_relaxed);
}

void Bus::read(PageId id, std::uint64_t offset, std::span<std::byte> out) {
  auto lock = lock_turn();
  check_open();
  PageRecord& r = live_locked(id);
  if (offset > r.size || out.size() > r.size - offset) {
    fail(ErrorCode::InvalidArgument, "read of ", out.size(), " bytes at offset ", offset,
         " is outside page ", id, " (", r.size, " bytes)");
  }
  if (!out.empty()) std::memcpy(out.data(), devices_->readable(r) + offset, out.size());
}

const std::byte* Bus::host_bytes(const PageRecord& r) {
  if (r.place == 0) return r.data;  // host arena: no lock (placements are read under it)
  auto lock = lock_mutex();
  return devices_->readable(r);
}

DevicePlace Bus::device_place(const PageRecord& r) {
  if (r.place == 0) return {};
  auto lock = lock_mutex();
  return devices_->device_place_of(r);
}

DeviceTraffic Bus::device_traffic() {
  auto lock = lock_mutex();
  return devices_->traffic();
}

PageRecord& Bus::pin(PageId id) {
  auto lock = lock_mutex();
  PageRecord& r = live_locked(id);
  PageTable::pin(r);
  return r;
}

void Bus::close() {
  auto lock = lock_turn();
  if (closed()) return;
  if (txn_) {  // closing inside a transaction abandons it
    undo_locked(*txn_, txn_->start);
    end_transaction_locked();
  }
  std::exception_ptr unsynced;  // reported after closing, like the final sync's failure
  try {
    settle_locked();
  } catch (...) {
    unsynced = std::current_exception();
  }
  closed_.store(true, std::memory_order_release);
  {
    std::lock_guard g(ring_create_);  // a ring created from now on starts closed
    bump(counters_.submits_discarded, drop_queued());
  }
  mem_log_.reset();  // nothing reads it once closed
  if (log_) {
    std::unique_ptr<Log> log = std::move(log_);
    log->close();  // throws after the bus is already closed; the destructor releases the lock
  }
  if (unsynced) std::rethrow_exception(unsynced);
}

Lsn Bus::checkpoint(const ProgressFn& progress) {
  auto lock = lock_turn();
  check_writable();
  check_no_transaction("checkpoint()");
  if (!log_ && !mem_log_) {
    fail(ErrorCode::HistoryUnavailable, "checkpoint() needs a log: this bus was made with history=False");
  }
  settle_locked();
  const Lsn lsn = lsn_.load(std::memory_order_relaxed);
  const PageBytesFn page_bytes = [this](const PageRecord& r) { return devices_->readable(r); };
  if (log_) {
    log_->checkpoint(lsn, table_, graph_image_locked(), page_bytes, progress);
  } else {
    // In memory: the bytes a checkpoint file would hold, kept beside the log.
    std::vector<std::byte> image;
    encode_checkpoint(lsn, table_, graph_image_locked(), page_bytes,
                      [&](std::span<const std::byte> b) { image.insert(image.end(), b.begin(), b.end()); }, progress);
    mem_log_->add_checkpoint(lsn, std::move(image));
    if (mem_retention_) {
      mem_log_->apply_retention(*mem_retention_);
      trim_index_locked(mem_log_->retained_from());
    }
  }
  emit_locked(EventKind::Checkpoint, 0, lsn, 0);
  lock.unlock();
  deliver_events();
  return lsn;
}

BusStats Bus::stats() const noexcept {
  auto get = [](const std::atomic<std::uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  const Counters& c = counters_;
  BusStats s;
  s.deltas_applied = get(c.deltas_applied);
  s.bytes_applied = get(c.bytes_applied);
  s.commits = get(c.commits);
  s.pages_created = get(c.pages_created);
  s.pages_deleted = get(c.pages_deleted);
  s.waves = get(c.waves);
  s.recomputes = get(c.recomputes);
  s.memo_skips = get(c.memo_skips);
  s.cutoffs = get(c.cutoffs);
  s.derived_deltas = get(c.derived_deltas);
  s.events = get(c.events);
  s.submits = get(c.submits);
  s.submits_rejected = get(c.submits_rejected);
  s.submits_discarded = get(c.submits_discarded);
  s.ticks = get(c.ticks);
  s.tick_overruns = get(c.tick_overruns);
  s.validation_failures = get(c.validation_failures);
  s.gc_runs = get(c.gc_runs);
  s.gc_bytes_freed = get(c.gc_bytes_freed);
  s.queue_depth = queue_depth();
  s.queue_high_water = ring_if_any() ? ring_if_any()->high_water() : 0;
  return s;
}

void Bus::reset_stats() {
  auto lock = lock_mutex();
  Counters& c = counters_;
  for (auto* x : {&c.deltas_applied, &c.bytes_applied, &c.commits, &c.pages_created, &c.pages_deleted, &c.waves,
                  &c.recomputes, &c.memo_skips, &c.cutoffs, &c.derived_deltas, &c.events, &c.submits,
                  &c.submits_rejected, &c.submits_discarded, &c.ticks, &c.tick_overruns, &c.validation_failures,
                  &c.gc_runs, &c.gc_bytes_freed}) {
    x->store(0, std::memory_order_relaxed);
  }
  if (Ring* r = ring_if_any()) r->reset_high_water();
  commit_latency_.reset();
  tick_latency_.reset();
}

MemoryReport Bus::memory() {
  // Buffers reserved ahead are counted whole; their pages are being faulted in on the helper
  // thread. Waiting for it makes the report what the resident set shows.
  Prefaulter::settle();
  auto lock = lock_turn();
  return memory_locked();
}

MemoryReport Bus::memory_locked() {
  const PageTableStats t = table_.stats();
  MemoryReport m;
  m.pages = t.live_pages;
  m.data_bytes = t.arena.requested_bytes;
  // Slack: class rounding, free blocks and slab tails of the arena, and the record table's
  // slots allocated ahead in chunks of 4096.
  m.arena_slack_bytes = t.arena.slack_bytes() + t.record_slack_bytes;
  m.metadata_bytes = t.record_bytes + t.info_bytes + t.name_index_bytes;
  m.graph_bytes = graph_.memory_bytes() + derivations_.size() * (sizeof(Derivation) + 64) + derivations_.index_bytes();
  for (const auto& [id, d] : derivations_) m.graph_bytes += (d.parents.capacity() + d.memo.capacity() + d.weights.capacity()) * 8;
  m.index_bytes = index_bytes_locked();
  m.log_bytes = mem_log_ ? mem_log_->bytes() : log_ ? log_->pending_bytes() : 0;
  m.cache_bytes = cache_bytes_locked();
  if (ring_if_any()) m.queue_bytes = queue_capacity_ * (sizeof(Submission*) + sizeof(std::uint64_t));
  m.queue_bytes += queued_bytes_.load(std::memory_order_relaxed);
  m.mirror_bytes = devices_->mirror_bytes();
  m.device_bytes = devices_->device_bytes();
  return m;
}

// The per-page lsn index (provenance): entries, queued rows and propagated deltas' inputs.
std::uint64_t Bus::index_bytes_locked() const {
  std::uint64_t b = pending_.size() * sizeof(PendingDelta) + index_.bucket_count() * sizeof(void*) +
                    index_.size() * (sizeof(PageHistory) + sizeof(PageId) + 16) + index_capacity_bytes_;
  for (const PendingBatch& pb : pending_batches_) b += pb.pages.capacity() * sizeof(PageId) + sizeof(pb);
  b += derived_.size() * sizeof(DerivedEntry) + derived_items_.size() * sizeof(derived_items_[0]);
  b += log_ ? log_->index_bytes() : mem_log_ ? mem_log_->index_bytes() : 0;  // where records are (history)
  return b;
}

// Reusable buffers: commit staging, recompute scratch, the spare transaction, tick buffers.
std::uint64_t Bus::cache_bytes_locked() const {
  std::uint64_t b = record_buf_.capacity() + scratch_.capacity() + wave_batch_->capacity_bytes() +
                    wave_nodes_.capacity() * sizeof(WaveNode) +
                    (changed_bits_.capacity() + seen_bits_.capacity()) * 8 +
                    tick_batch_.capacity_bytes() + (drained_.capacity() + carry_.capacity()) * sizeof(void*) +
                    events_.capacity() * sizeof(BusEvent) + devices_->scratch_bytes() +
                    index_arena_->unused_bytes();
  if (spare_txn_) {
    const Transaction& spare = *spare_txn_;
    b += sizeof(Transaction) + spare.arena_bytes();
  }
  return b;
}

}  // namespace mmsb
