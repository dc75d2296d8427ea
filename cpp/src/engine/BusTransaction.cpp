// Bus transactions: one owner thread, changes applied at once with undo, one log record at commit.
#include <cstring>
#include <algorithm>

#include "DevicePages.hpp"
#include "Transaction.hpp"
#include "mmsb/core/Error.hpp"

namespace mmsb {

void Bus::check_not_reentered() const {
  if (wave_owner_.load(std::memory_order_acquire) == std::this_thread::get_id()) {
    fail(ErrorCode::Propagation, "a recompute function called into the bus; recomputes get their parents ",
         "as arguments and must not read or write the bus themselves");
  }
  if (clock_owner_.load(std::memory_order_acquire) == std::this_thread::get_id()) {
    fail(ErrorCode::InvalidArgument, "the bus's clock called into the bus; a clock runs inside a commit and ",
         "must only return the time");
  }
}

std::unique_lock<std::mutex> Bus::lock_mutex() {
  check_not_reentered();
  std::unique_lock lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock()) {
    Blocking b(blocking_);
    lock.lock();
  }
  return lock;
}

// The commit lock is held here: the clock's own call into the bus would wait for it forever.
std::uint64_t Bus::now_ns() {
  if (!clock_) return wall_clock_ns();
  ScopedOwner owner(clock_owner_);
  return clock_();
}

std::unique_lock<std::mutex> Bus::lock_turn() {
  std::unique_lock lock = lock_mutex();
  const auto me = std::this_thread::get_id();
  if (txn_ && txn_->owner != me) {
    Blocking b(blocking_);
    txn_done_.wait(lock, [&] { return !txn_ || txn_->owner == me; });
  }
  // A failed group sync is undone before anyone validates against (or reads) what it lost; an
  // open transaction on top (this thread's) is undone with it once it commits.
  if (!txn_ && log_ && log_->group() && log_->group()->failed()) abandon_unsynced_locked();
  return lock;
}

bool Bus::in_transaction() const noexcept {
  return txn_open_.load(std::memory_order_acquire) &&
         txn_owner_.load(std::memory_order_acquire) == std::this_thread::get_id();
}

bool Bus::must_wait() const noexcept {
  return txn_open_.load(std::memory_order_acquire) &&
         txn_owner_.load(std::memory_order_acquire) != std::this_thread::get_id();
}

void Bus::wait_for_turn() { lock_turn(); }

void Bus::check_no_transaction(const char* what) const {
  if (txn_) {
    fail(ErrorCode::InvalidArgument, what,
         " is not allowed inside an open transaction (its changes are not committed yet); "
         "call it after the transaction ends");
  }
}

void Bus::begin_transaction() {
  auto lock = lock_turn();
  check_writable();
  if (txn_) fail(ErrorCode::InvalidArgument, "a transaction is already open on this thread; transactions do not nest");
  txn_ = new_transaction_locked();
  txn_owner_.store(txn_->owner, std::memory_order_release);
  txn_open_.store(true, std::memory_order_release);
}

void Bus::end_transaction_locked() noexcept {
  recycle_transaction_locked();
  txn_open_.store(false, std::memory_order_release);
  txn_owner_.store(std::thread::id{}, std::memory_order_release);
  txn_done_.notify_all();
}

void Bus::require_own_transaction() const {
  // Checked before waiting for the turn: another thread's transaction would be waited for forever,
  // since only the thread that opened it can end it.
  if (!in_transaction()) {
    fail(ErrorCode::InvalidArgument, "no transaction is open on this thread (a transaction is ended by the ",
         "thread that opened it)");
  }
}

void Bus::commit_transaction() {
  const std::uint64_t t0 = monotonic_ns();
  require_own_transaction();
  auto lock = lock_turn();
  if (!txn_) fail(ErrorCode::InvalidArgument, "no transaction is open on this thread");
  try {
    finish_transaction_locked();
  } catch (...) {
    end_transaction_locked();
    throw;
  }
  end_transaction_locked();
  note_commit_latency_locked(t0);
  lock.unlock();
  deliver_events();
}

std::unique_ptr<Bus::Transaction> Bus::new_transaction_locked() {
  release_durable_locked();
  // The last transaction's arenas are reused: a wave's undo entries and bytes then need no
  // fresh (page-faulting) memory each commit.
  std::unique_ptr<Transaction> t = spare_txn_ ? std::move(spare_txn_) : std::make_unique<Transaction>();
  t->owner = std::this_thread::get_id();
  t->start = mark_locked();
  t->propagation = propagation_;
  t->ops.set_counting_only(!logging());  // no log (a time-travel copy): undo is all it needs
  return t;
}

namespace {
// Each thread's last commit per bus still to be acknowledged (group commit): the bus's
// await_durable() waits for it. Holding the GroupSync keeps it alive past a close.
struct PendingAck {
  const Bus* bus;
  std::shared_ptr<GroupSync> sync;
  std::uint64_t ticket;
};
thread_local std::vector<PendingAck> t_acks;
}  // namespace

void Bus::recycle_transaction_locked() noexcept {
  if (!txn_) return;
  if (txn_->ticket == 0) return retire_transaction_locked(std::move(txn_));
  try {
    auto ack = std::find_if(t_acks.begin(), t_acks.end(), [&](const PendingAck& a) { return a.bus == this; });
    if (ack == t_acks.end()) ack = t_acks.insert(t_acks.end(), PendingAck{this, nullptr, 0});
    ack->sync = log_->group();
    ack->ticket = txn_->ticket;  // a newer ticket covers the older: durability is a prefix
    parked_.push_back(std::move(txn_));
    note_delivery_due_locked();
  } catch (...) {
    // No memory to keep its undo: make it durable now instead (with what is parked before it).
    try {
      log_->sync();
    } catch (...) {  // nothing left to undo it with; the failed sync aborts the log's later writes
    }
    retire_transaction_locked(std::move(txn_));
    release_durable_locked();
  }
}

void Bus::retire_transaction_locked(std::unique_ptr<Transaction> txn) noexcept {
  Transaction& t = *txn;
  // Keep at most a few MiB of arenas: one huge transaction must not pin its memory forever.
  std::size_t bytes = t.arena_bytes();
  for (HeavyUndo& h : t.heavy) {
    if (const auto* d = std::get_if<UndoDelete>(&h)) {
      // Pages deleted inside were pinned so rollback could bring them back; now they may go.
      if (t.committed) table_.unpin(table_.record(d->id));
      continue;
    }
    auto* b = std::get_if<UndoBatch>(&h);
    if (b == nullptr || bytes + b->capacity_bytes() > kSpareTransactionBytes) continue;
    bytes += b->capacity_bytes();
    b->clear();
    try {
      t.spare_batches.push_back(std::move(*b));
    } catch (...) {  // no room to keep it: the next batch allocates afresh
    }
  }
  t.ticket = 0;
  t.committed = false;
  if (bytes <= kSpareTransactionBytes) {
    t.undo.clear();
    t.heavy.clear();
    t.undo_runs.clear();
    t.undo_bytes.clear();
    t.undo_epochs.clear();
    t.ops.reset({});
    spare_txn_ = std::move(txn);
  }
}

void Bus::release_durable_locked() noexcept {
  if (parked_.empty()) return;
  const std::uint64_t durable = log_->group()->durable_ticket();
  while (!parked_.empty() && parked_.front()->ticket <= durable) {
    std::unique_ptr<Transaction> t = std::move(parked_.front());
    parked_.pop_front();
    retire_transaction_locked(std::move(t));
  }
  note_delivery_due_locked();
}

void Bus::note_delivery_due_locked() noexcept {
  // A sink taking no event kind (kept while its owner lives, see set_event_sink) queues nothing.
  delivery_due_.store((sink_ != nullptr && event_mask_ != 0) || !parked_.empty(), std::memory_order_relaxed);
}

void Bus::abandon_unsynced_locked() noexcept {
  if (!log_ || !log_->group()) return;
  log_->abandon_unsynced();
  release_durable_locked();
  for (auto it = parked_.rbegin(); it != parked_.rend(); ++it) {
    undo_locked(**it, (*it)->start);
    (*it)->committed = false;  // undo brought its deleted pages back (and unpinned them)
  }
  while (!parked_.empty()) {
    std::unique_ptr<Transaction> t = std::move(parked_.back());
    parked_.pop_back();
    retire_transaction_locked(std::move(t));
  }
  note_delivery_due_locked();
  clear_changed_locked();
  forced_.clear();
}

void Bus::settle_locked() {
  if (txn_ || !log_ || !log_->group()) return;  // an open transaction's callers settle after it
  if (log_->group()->failed()) abandon_unsynced_locked();
  if (!parked_.empty()) sync_log_locked();
}

void Bus::sync_log_locked() {
  try {
    log_->sync();
  } catch (const Error&) {
    abandon_unsynced_locked();
    throw;
  }
  release_durable_locked();
}

void Bus::await_durable() {
  auto ack = std::find_if(t_acks.begin(), t_acks.end(), [&](const PendingAck& a) { return a.bus == this; });
  if (ack == t_acks.end()) return;
  const std::shared_ptr<GroupSync> sync = std::move(ack->sync);
  const std::uint64_t ticket = ack->ticket;
  t_acks.erase(ack);
  for (;;) {
    GroupSync::Outcome outcome;
    {
      Blocking b(blocking_);
      outcome = sync->wait(ticket);
    }
    if (outcome == GroupSync::Outcome::Durable) return;
    if (outcome == GroupSync::Outcome::Failed) {
      fail(ErrorCode::Durability, "the log could not be synced (", sync->failure(),
           "); this commit and every commit not yet durable were rolled back");
    }
    lock_turn();  // Unhandled: undo what the failed sync covered (no transaction open), wait again
  }
}

TxnMark Bus::mark_locked() const {
  TxnMark m;
  m.undo = txn_ ? txn_->undo.size() : 0;
  m.heavy = txn_ ? txn_->heavy.size() : 0;
  if (txn_) m.ops = txn_->ops.mark();
  m.lsn = lsn();
  m.stats = stats();
  m.pending_pages = pending_pages_.size();
  m.pending_runs = pending_runs_.size();
  m.last_run_count = pending_runs_.empty() ? 0 : pending_runs_.back().count;
  m.events = events_.size();
  return m;
}

// Logs the open transaction as one record; on a logging failure everything is undone and the
// error rethrown. The transaction stays set; recycling it parks or retires it.
void Bus::finish_transaction_locked() {
  Transaction& t = *txn_;
  if (logging() && t.ops.op_count() > 0) {
    try {
      record_buf_.clear();
      t.ops.frame(record_buf_, t.start.lsn + 1);
      log_locked(lsn());
    } catch (...) {
      undo_locked(t, t.start);
      throw;
    }
  }
  t.committed = true;  // retiring it (now, or once durable) releases the pages it deleted
}


void Bus::rollback_transaction() {
  require_own_transaction();
  auto lock = lock_turn();
  if (!txn_) fail(ErrorCode::InvalidArgument, "no transaction is open on this thread");
  undo_locked(*txn_, txn_->start);
  propagation_ = txn_->propagation;  // the block's setting goes with the changes made under it
  rollbacks_.fetch_add(1, std::memory_order_release);
  end_transaction_locked();
}

// An undo's device transfer. One that fails cannot be undone in turn: the device keeps bytes of a
// change the log never holds (or holds as failed), so no later change may build on them. The bus
// takes no more writes; a reopen shows the log's state, reads meanwhile may show those bytes.
void Bus::restore_device_locked(std::span<const DeviceRow> rows, std::span<const std::byte> bytes) noexcept {
  try {
    devices_->write(rows, bytes);
  } catch (const std::exception& e) {
    try {
      broken_why_ = std::string("could not undo a change on its device (") + e.what() + ")";
    } catch (...) {  // no memory for the reason: the flag alone still stops writes
    }
    log_broken_ = true;
  }
}

// Entry `index` of t.heavy (one that owns memory), for undo_locked.
void Bus::undo_heavy_locked(Transaction& t, std::size_t index) noexcept {
  HeavyUndo& entry = t.heavy[index];
  if (auto* b = std::get_if<UndoBatch>(&entry)) {
    std::uint64_t end = b->old.size();
    std::vector<DeviceRow> device_rows;
    for (std::size_t i = b->page_ids.size(); i-- > 0;) {
      const std::uint64_t length = b->lengths[i];
      end -= length;
      const RowPrior prior = b->prior[i];
      if (prior.last_lsn == RowPrior::kNotApplied) continue;
      // Pages deleted later in the transaction are back by now (undone first) and were pinned.
      PageRecord& rec = table_.record(b->page_ids[i]);
      if (devices_->on_device(rec)) {
        device_rows.push_back(DeviceRow::of(rec, b->offsets[i], end, length));
      } else if (length != 0) {
        std::memcpy(rec.data + b->offsets[i], b->old.data() + end, length);
      }
      rec.epoch.store(prior.epoch, std::memory_order_release);
      rec.last_lsn.store(prior.last_lsn, std::memory_order_relaxed);
    }
    // Device rows saved the bytes from before the batch, so one write in any order restores them.
    if (!device_rows.empty()) restore_device_locked(device_rows, {b->old.data(), b->old.size()});
  } else if (auto* del = std::get_if<UndoDelete>(&entry)) {
    table_.undelete(del->id, del->info ? std::optional<PageInfo>(*del->info) : std::nullopt);
    table_.unpin(table_.record(del->id));
  } else if (auto* md = std::get_if<UndoMetadata>(&entry)) {
    PageInfo& info = table_.info_for_update(md->id);
    if (md->old) {
      info.metadata.insert_or_assign(md->key, *md->old);
    } else {
      info.metadata.erase(md->key);
    }
  } else if (auto* ch = std::get_if<UndoChild>(&entry)) {
    // Restoring one child's in-edges to an earlier (acyclic) state cannot close a cycle.
    const std::vector<Edge> now = graph_.in_edges(ch->child);
    for (const Edge& e : now) graph_.remove_edge(e.parent, e.child);
    for (const Edge& e : ch->in_edges) graph_.add_edge(e.parent, e.child, e.kind);
    for (const Edge& e : now) refresh_dependents_locked(e.parent);
    for (const Edge& e : ch->in_edges) refresh_dependents_locked(e.parent);
    if (ch->derivation) {
      ch->derivation->kept_parents = nullptr;  // kept lists may have been dropped since the copy
      derivations_.insert_or_assign(ch->child, std::move(*ch->derivation));
    } else {
      derivations_.erase(ch->child);
    }
  }
}

// Newest change first, so every byte, epoch, name, edge and memo returns to its value at `m`.
void Bus::undo_locked(Transaction& t, const TxnMark& m) noexcept {
  for (auto it = t.undo.rbegin(); it != t.undo.rend() - static_cast<std::ptrdiff_t>(m.undo); ++it) {
    if (auto* d = std::get_if<UndoDelta>(&*it)) {
      const std::byte* src = t.undo_bytes.data() + d->byte_begin;
      const std::span<const Run> runs(t.undo_runs.data() + d->run_begin, d->run_count);
      if (devices_->on_device(*d->rec)) {
        std::uint64_t bytes = 0;
        for (const Run& r : runs) bytes += r.length;
        restore_device_locked(DevicePages::rows_of(*d->rec, runs), {src, bytes});
      } else {
        for (const Run& r : runs) {
          if (r.length != 0) std::memcpy(d->rec->data + r.offset, src, r.length);
          src += r.length;
        }
      }
      d->rec->epoch.store(d->epoch, std::memory_order_release);
      d->rec->last_lsn.store(d->last_lsn, std::memory_order_relaxed);
    } else if (auto* h = std::get_if<UndoHeavy>(&*it)) {
      undo_heavy_locked(t, h->index);
    } else if (auto* c = std::get_if<UndoCreate>(&*it)) {
      // Never committed, its first delta (create_page with data) included: nothing of it is at
      // any epoch, so provenance and handles see epoch 0 whether or not gc() keeps the record.
      PageRecord& r = table_.get(c->id);
      r.epoch.store(0, std::memory_order_release);
      r.last_lsn.store(0, std::memory_order_relaxed);
      table_.erase(c->id);
    } else if (auto* mm = std::get_if<UndoMemo>(&*it)) {
      if (auto found = derivations_.find(mm->child); found != derivations_.end()) {
        const auto memo = t.undo_epochs.begin() + static_cast<std::ptrdiff_t>(mm->memo_begin);
        found->second.memo.assign(memo, memo + static_cast<std::ptrdiff_t>(mm->memo_count));
      }
      if (mm->was_stale) stale_.insert(mm->child);
    } else if (auto* st = std::get_if<UndoStale>(&*it)) {
      if (st->was_stale) {
        stale_.insert(st->page);
      } else {
        stale_.erase(st->page);
      }
    }
  }
  t.heavy.erase(t.heavy.begin() + static_cast<std::ptrdiff_t>(m.heavy), t.heavy.end());
  t.undo.erase(t.undo.begin() + static_cast<std::ptrdiff_t>(m.undo), t.undo.end());
  t.ops.reset(m.ops);
  while (!derived_.empty() && derived_.back().lsn > m.lsn) derived_.pop_back();
  truncate_index_queue_locked(m.pending_pages, m.pending_runs, m.last_run_count);
  events_.resize(m.events);
  lsn_.store(m.lsn, std::memory_order_release);
  counters_.deltas_applied.store(m.stats.deltas_applied, std::memory_order_relaxed);
  counters_.bytes_applied.store(m.stats.bytes_applied, std::memory_order_relaxed);
  counters_.commits.store(m.stats.commits, std::memory_order_relaxed);
  counters_.pages_created.store(m.stats.pages_created, std::memory_order_relaxed);
  counters_.pages_deleted.store(m.stats.pages_deleted, std::memory_order_relaxed);
  counters_.waves.store(m.stats.waves, std::memory_order_relaxed);
  counters_.recomputes.store(m.stats.recomputes, std::memory_order_relaxed);
  counters_.memo_skips.store(m.stats.memo_skips, std::memory_order_relaxed);
  counters_.cutoffs.store(m.stats.cutoffs, std::memory_order_relaxed);
  counters_.derived_deltas.store(m.stats.derived_deltas, std::memory_order_relaxed);
}

void Bus::txn_note_delta_locked(PageRecord& r, const Delta& d, const std::span<const std::pair<PageId, Epoch>>* inputs) {
  Transaction& t = *txn_;
  // Arena bytes past what an entry records are never read, so a failure part-way is harmless.
  const UndoDelta u{&r, t.undo_runs.size(), d.run_list().size(), t.undo_bytes.size(),
                    r.epoch.load(std::memory_order_relaxed), r.last_lsn.load(std::memory_order_relaxed)};
  t.undo_runs.insert(t.undo_runs.end(), d.run_list().begin(), d.run_list().end());
  if (devices_->on_device(r)) {
    t.undo_bytes.resize(t.undo_bytes.size() + d.payload().size());
    devices_->read(r, d.run_list(), t.undo_bytes.data() + u.byte_begin);
  } else {
    for (const Run& run : d.run_list()) t.undo_bytes.insert(t.undo_bytes.end(), r.data + run.offset, r.data + run.end());
  }
  reserve_one(t.undo);
  if (inputs != nullptr) {
    txn_->ops.add_derived(d, *inputs);
  } else {
    txn_->ops.add(d);
  }
  t.undo.emplace_back(u);  // cannot fail after the reserve
}

UndoSink Bus::txn_note_batch_locked(const DeltaBatchView& batch, Lsn first, std::uint64_t timestamp_ns,
                                    bool log_now) {
  UndoBatch u;
  if (!txn_->spare_batches.empty()) {
    u = std::move(txn_->spare_batches.back());
    txn_->spare_batches.pop_back();
  }
  u.page_ids.assign(batch.page_ids.begin(), batch.page_ids.end());
  u.offsets.assign(batch.offsets.begin(), batch.offsets.end());
  u.lengths.assign(batch.lengths.begin(), batch.lengths.end());
  // Filled by the (parallel) apply right before each row writes: a cache miss per row saved.
  // Only `prior` is preset, so that a row the apply never reached is known and left alone.
  u.old.resize(batch.payload.size());
  u.prior.resize(batch.rows());
  std::fill(u.prior.begin(), u.prior.end(), RowPrior{0, RowPrior::kNotApplied});
  txn_->reserve_heavy();
  if (log_now) {
    // Group commit: sets txn_->ticket (parked until durable). Flush, none: maybe written on the
    // log's writer thread while the batch applies (record_batch_locked waits for it).
    log_batch_locked(batch, first, timestamp_ns, /*may_overlap=*/true);
  } else {
    txn_->ops.add(batch, timestamp_ns);
  }
  txn_->push_heavy(std::move(u));
  return std::get<UndoBatch>(txn_->heavy.back()).sink();
}

}  // namespace mmsb
