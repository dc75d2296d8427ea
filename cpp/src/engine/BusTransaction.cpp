// Bus transactions: one owner thread, changes applied at once with undo, one log record at commit.
#include <cstring>
#include <unordered_set>

#include "Transaction.hpp"
#include "mmsb/core/Error.hpp"

namespace mmsb {

std::unique_lock<std::mutex> Bus::lock_turn() {
  std::unique_lock lock(mutex_);
  const auto me = std::this_thread::get_id();
  txn_done_.wait(lock, [&] { return !txn_ || txn_->owner == me; });
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
  auto t = std::make_unique<Transaction>();
  t->owner = std::this_thread::get_id();
  t->start_lsn = lsn();
  t->stats = stats();
  txn_ = std::move(t);
  txn_owner_.store(txn_->owner, std::memory_order_release);
  txn_open_.store(true, std::memory_order_release);
}

void Bus::end_transaction_locked() noexcept {
  txn_.reset();
  txn_open_.store(false, std::memory_order_release);
  txn_owner_.store(std::thread::id{}, std::memory_order_release);
  txn_done_.notify_all();
}

void Bus::commit_transaction() {
  auto lock = lock_turn();
  if (!txn_) fail(ErrorCode::InvalidArgument, "no transaction is open on this thread");
  Transaction& t = *txn_;
  if (log_ && t.ops.op_count() > 0) {
    try {
      record_buf_.clear();
      t.ops.frame(record_buf_, t.start_lsn + 1);
      log_->append(record_buf_, lsn());
    } catch (...) {
      undo_locked(t);
      end_transaction_locked();
      throw;
    }
  }
  // Pages deleted inside were pinned so rollback could bring them back; now they may go.
  for (const Undo& u : t.undo) {
    if (const auto* d = std::get_if<UndoDelete>(&u)) table_.unpin(table_.record(d->id));
  }
  end_transaction_locked();
}

void Bus::rollback_transaction() {
  auto lock = lock_turn();
  if (!txn_) fail(ErrorCode::InvalidArgument, "no transaction is open on this thread");
  undo_locked(*txn_);
  end_transaction_locked();
}

// Newest change first, so every byte, epoch and name returns to its value at begin.
void Bus::undo_locked(Transaction& t) noexcept {
  for (auto it = t.undo.rbegin(); it != t.undo.rend(); ++it) {
    if (auto* d = std::get_if<UndoDelta>(&*it)) {
      const std::byte* src = d->old.data();
      for (const Run& r : d->runs) {
        if (r.length != 0) std::memcpy(d->rec->data + r.offset, src, r.length);
        src += r.length;
      }
      d->rec->epoch.store(d->epoch, std::memory_order_release);
      d->rec->last_lsn.store(d->last_lsn, std::memory_order_relaxed);
    } else if (auto* b = std::get_if<UndoBatch>(&*it)) {
      std::uint64_t end = b->old.size();
      for (auto row = b->rows.rbegin(); row != b->rows.rend(); ++row) {
        end -= row->length;
        if (row->length != 0) std::memcpy(row->rec->data + row->offset, b->old.data() + end, row->length);
      }
      for (const auto& [rec, epoch, last] : b->first_touch) {
        rec->epoch.store(epoch, std::memory_order_release);
        rec->last_lsn.store(last, std::memory_order_relaxed);
      }
    } else if (auto* c = std::get_if<UndoCreate>(&*it)) {
      table_.erase(c->id);
    } else if (auto* del = std::get_if<UndoDelete>(&*it)) {
      table_.undelete(del->id, del->info);
      table_.unpin(table_.record(del->id));
    } else if (auto* m = std::get_if<UndoMetadata>(&*it)) {
      PageInfo& info = table_.info_for_update(m->id);
      if (m->old) {
        info.metadata.insert_or_assign(m->key, *m->old);
      } else {
        info.metadata.erase(m->key);
      }
    }
  }
  lsn_.store(t.start_lsn, std::memory_order_release);
  counters_.deltas_applied.store(t.stats.deltas_applied, std::memory_order_relaxed);
  counters_.bytes_applied.store(t.stats.bytes_applied, std::memory_order_relaxed);
  counters_.commits.store(t.stats.commits, std::memory_order_relaxed);
  counters_.pages_created.store(t.stats.pages_created, std::memory_order_relaxed);
  counters_.pages_deleted.store(t.stats.pages_deleted, std::memory_order_relaxed);
}

void Bus::txn_note_delta_locked(PageRecord& r, const Delta& d) {
  UndoDelta u{&r, d.run_list(), {}, r.epoch.load(std::memory_order_relaxed),
              r.last_lsn.load(std::memory_order_relaxed)};
  u.old.reserve(d.payload().size());
  for (const Run& run : d.run_list()) u.old.insert(u.old.end(), r.data + run.offset, r.data + run.end());
  txn_->undo.reserve(txn_->undo.size() + 1);
  txn_->ops.add(d);
  txn_->undo.emplace_back(std::move(u));  // cannot fail after the reserve
}

void Bus::txn_note_batch_locked(const DeltaBatchView& batch, std::uint64_t timestamp_ns) {
  UndoBatch u;
  u.rows.reserve(batch.rows());
  u.old.reserve(batch.payload.size());
  std::unordered_set<PageRecord*> seen;
  for (std::size_t i = 0; i < batch.rows(); ++i) {
    PageRecord* rec = table_.find(batch.page_ids[i]);
    u.rows.push_back({rec, batch.offsets[i], batch.lengths[i]});
    u.old.insert(u.old.end(), rec->data + batch.offsets[i], rec->data + batch.offsets[i] + batch.lengths[i]);
    if (seen.insert(rec).second) {
      u.first_touch.emplace_back(rec, rec->epoch.load(std::memory_order_relaxed),
                                 rec->last_lsn.load(std::memory_order_relaxed));
    }
  }
  txn_->undo.reserve(txn_->undo.size() + 1);
  txn_->ops.add(batch, timestamp_ns);
  txn_->undo.emplace_back(std::move(u));
}

}  // namespace mmsb
